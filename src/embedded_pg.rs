//! The embedded-PostgreSQL default: a private cluster started from the machine's PostgreSQL
//! binaries in a data directory that is kept across restarts. As root, the database process
//! runs as an unprivileged user (initdb and postgres refuse root).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The one line printed when no PostgreSQL binaries are found.
pub const MISSING_BINARIES: &str = "tollgate: no PostgreSQL binaries found (looked on PATH and in /usr/lib/postgresql/*/bin); install them (Debian/Ubuntu: `apt-get install -y postgresql`, macOS: `brew install postgresql`) or set DATABASE_URL to an existing database";

#[derive(Debug)]
pub struct EmbeddedPg {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    /// Server settings given at start (`-c name=value`), beyond the embedded default's own.
    settings: Vec<(String, String)>,
    /// Whether this process started the server (and so stops it).
    owned: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", MISSING_BINARIES)]
pub struct MissingBinaries;

/// Finds a directory holding `initdb`, `pg_ctl` and `postgres`: `TOLLGATE_PG_BIN_DIR` if set
/// (and then only there), else PATH, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).exists())
    };
    if let Some(dir) = std::env::var_os("TOLLGATE_PG_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return has_all(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("pg_ctl").exists() {
                // Debian puts symlinks of some tools on PATH; resolve to the real directory.
                let real = std::fs::canonicalize(dir.join("pg_ctl"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or(dir.clone());
                if has_all(&real) {
                    return Some(real);
                }
                if has_all(&dir) {
                    return Some(dir);
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of a user from /etc/passwd.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl EmbeddedPg {
    /// Starts (initialising first if needed) the cluster under `data_dir/pg`, or attaches to
    /// one another process already started there.
    pub fn start(data_dir: &Path) -> Result<Self> {
        Self::start_with(data_dir, &[])
    }

    /// [`EmbeddedPg::start`] with server settings of the caller's (for example
    /// `shared_preload_libraries`), given to the server at every start.
    pub fn start_with(data_dir: &Path, settings: &[(&str, &str)]) -> Result<Self> {
        let bin_dir = find_bin_dir().ok_or(MissingBinaries)?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = std::fs::canonicalize(data_dir)?;
        let pgdata = data_dir.join("pg");
        let log_file = data_dir.join("postgres.log");
        let run_as = if is_root() {
            Some(
                lookup_user("postgres")
                    .or_else(|| lookup_user("nobody"))
                    .context("running as root, but there is no 'postgres' or 'nobody' user to run the database as")?,
            )
        } else {
            None
        };
        let mut pg = EmbeddedPg {
            bin_dir,
            pgdata,
            log_file,
            port: 0,
            run_as,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            owned: false,
        };
        if !pg.pgdata.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        if let Some(port) = pg.running_port() {
            pg.port = port;
            return Ok(pg);
        }
        pg.port = free_port()?;
        pg.launch()?;
        pg.owned = true;
        Ok(pg)
    }

    /// Starts the server again after [`EmbeddedPg::stop`], on the same port (so clients
    /// reconnect by themselves).
    pub fn restart(&mut self) -> Result<()> {
        self.launch()?;
        self.owned = true;
        Ok(())
    }

    fn launch(&self) -> Result<()> {
        let pg = self;
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200",
            pg.port
        );
        for (name, value) in &pg.settings {
            opts.push_str(&format!(" -c {name}='{value}'"));
        }
        let status = pg
            .command("pg_ctl")
            .arg("start")
            .arg("-w")
            .arg("-t")
            .arg("60")
            .arg("-D")
            .arg(&pg.pgdata)
            .arg("-l")
            .arg(&pg.log_file)
            .arg("-o")
            .arg(opts)
            .stdout(Stdio::null())
            .status()
            .context("running pg_ctl start")?;
        if !status.success() {
            bail!(
                "the embedded PostgreSQL did not start; see {}",
                pg.log_file.display()
            );
        }
        Ok(())
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            // The server's own connections (an extension's, such as Citus's to its other
            // nodes) look for client certificates under $HOME, which must be the database
            // user's to read, not root's.
            if let Some(dir) = self.log_file.parent() {
                cmd.env("HOME", dir);
            }
        }
        // Its own process group, so a terminal's Ctrl-C reaches only Tollgate, which then
        // stops the database cleanly.
        cmd.process_group(0);
        cmd.env_remove("PGDATA");
        cmd
    }

    fn initdb(&self) -> Result<()> {
        std::fs::create_dir_all(&self.pgdata)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.pgdata, Some(uid), Some(gid))?;
            if let Some(parent) = self.log_file.parent() {
                std::os::unix::fs::chown(parent, Some(uid), Some(gid))?;
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.pgdata, std::fs::Permissions::from_mode(0o700))?;
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed in {}: {}",
                self.pgdata.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The port of a server already running on this data directory, if any.
    fn running_port(&self) -> Option<u16> {
        let pid_file = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: i32 = lines.next()?.trim().parse().ok()?;
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return None;
        }
        lines.nth(2)?.trim().parse().ok()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server if this process started it.
    pub fn stop(&self) {
        if !self.owned {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-w")
            .arg("-m")
            .arg("fast")
            .arg("-D")
            .arg(&self.pgdata)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Leaves the server running when this value is dropped or stopped (tests hand its
    /// lifetime to a watchdog).
    pub fn disown(&mut self) {
        self.owned = false;
    }

    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
}

/// Creates `database` on the server at `server_url` if it does not exist.
pub async fn ensure_database(server_url: &str, database: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server_url)
        .await
        .context("connecting to the embedded PostgreSQL")?;
    crate::db::schema::ensure_database(&mut conn, database).await?;
    Ok(())
}
