// @tollgate/react: a frontend holding a customer session (`cs_…`, SPEC §9) gates features and
// shows usage with these. Plain ES modules (`createElement`, no JSX), so the package is used
// from the repository as it is, with no build step. Types in index.d.ts.

import { Tollgate } from "@tollgate/client";
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useState,
} from "react";

const Context = createContext(null);

/**
 * Holds one client for the session below it and a refresh generation: `refresh()` (from any
 * hook) makes every hook under the provider ask again.
 */
export function TollgateProvider({ sessionToken, baseUrl, timeoutMs, maxRetries, children }) {
  const client = useMemo(
    () => new Tollgate({ sessionToken, baseUrl, timeoutMs, maxRetries }),
    [sessionToken, baseUrl, timeoutMs, maxRetries],
  );
  const [generation, setGeneration] = useState(0);
  const refresh = useCallback(() => setGeneration((g) => g + 1), []);
  const value = useMemo(() => ({ client, generation, refresh }), [client, generation, refresh]);
  return createElement(Context.Provider, { value }, children);
}

/** The provider's client and `refresh`. */
export function useTollgate() {
  const value = useContext(Context);
  if (value === null) throw new Error("useTollgate: wrap the component in <TollgateProvider>");
  return value;
}

/**
 * The answer of `load(client)`, asked again when the provider refreshes or `key` changes:
 * `{data, error, loading, refresh}`. While it asks again the last answer stays in `data`.
 */
function useAsk(load, key) {
  const { client, generation, refresh } = useTollgate();
  const [state, setState] = useState({ data: undefined, error: undefined, loading: true });
  useEffect(() => {
    let current = true;
    setState((s) => ({ ...s, loading: true }));
    load(client).then(
      (data) => current && setState({ data, error: undefined, loading: false }),
      (error) => current && setState((s) => ({ data: s.data, error, loading: false })),
    );
    return () => {
      current = false;
    };
    // `load` is a new closure each render, over what `key` names: asking again when `key`
    // changes is what is meant, not on every render.
  }, [client, generation, key]);
  return { ...state, refresh };
}

/** Every feature of the session's customer: limit, used, remaining, reset. */
export function useEntitlements() {
  const { data, ...rest } = useAsk((client) => client.me.entitlements(), "");
  return { entitlements: data?.data, ...rest };
}

/** May the session's customer use `quantity` (default 1) of `feature`? Records nothing. */
export function useCheck(feature, { quantity } = {}) {
  const { data, ...rest } = useAsk(
    (client) => client.me.check(feature, { quantity }),
    `${feature}\u0000${quantity ?? ""}`,
  );
  return { allowed: data?.allowed, check: data, ...rest };
}

/**
 * Renders `children` only when `feature` is allowed, `fallback` when it is not (or the check
 * failed), and `loading` until the first answer: seed 001's `<Protect>`.
 */
export function Gate({ feature, quantity, fallback = null, loading = null, children }) {
  const { allowed, loading: waiting, check } = useCheck(feature, { quantity });
  if (check === undefined && waiting) return loading;
  return allowed ? children : fallback;
}
