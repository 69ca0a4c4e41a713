import type { ReactNode } from "react";
import type { CheckResult, Tollgate, TollgateError } from "@tollgate/client";

export interface TollgateProviderProps {
  /** The customer session's token (`cs_…`), from `POST /v1/customer_sessions` on your server. */
  sessionToken: string;
  /** Where Tollgate answers (its origin must allow yours: the tenant's `cors_origins`). */
  baseUrl: string;
  timeoutMs?: number;
  maxRetries?: number;
  children?: ReactNode;
}

export declare function TollgateProvider(props: TollgateProviderProps): ReactNode;

export interface TollgateContext {
  client: Tollgate;
  /** Makes every hook under the provider ask Tollgate again. */
  refresh(): void;
}

export declare function useTollgate(): TollgateContext;

interface Asked {
  /** An error of the last ask (the last answer stays meanwhile). */
  error: TollgateError | undefined;
  /** True until the first answer, and while asking again. */
  loading: boolean;
  refresh(): void;
}

export declare function useEntitlements(): Asked & {
  entitlements: CheckResult[] | undefined;
};

export declare function useCheck(
  feature: string,
  options?: { quantity?: number },
): Asked & {
  /** Undefined until the first answer. */
  allowed: boolean | undefined;
  check: CheckResult | undefined;
};

export interface GateProps {
  feature: string;
  quantity?: number;
  /** Rendered when the feature is not allowed (or the check failed). */
  fallback?: ReactNode;
  /** Rendered until the first answer. */
  loading?: ReactNode;
  children?: ReactNode;
}

export declare function Gate(props: GateProps): ReactNode;
