//! A PostgreSQL server of a test's own, on a free loopback port, that the test
//! may stop and start again (the shared server must stay up for the others).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private PostgreSQL server; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgInstance {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    pub port: u16,
}

impl PgInstance {
    /// Initialises a fresh cluster and starts it.
    pub async fn start() -> Self {
        let bin_dir = postgres_bin_dir();
        let port = crate::server_port().await;
        let data_dir =
            std::env::temp_dir().join(format!("cap-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let instance = Self {
            bin_dir,
            data_dir,
            port,
        };
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&instance.data_dir));
        }
        let initdb = instance.bin_dir.join("initdb");
        run(instance
            .as_postgres(&initdb)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&instance.data_dir));
        instance.start_again();
        instance
    }

    /// `postgres://` URL of a database on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server at once, as a crash would (`immediate` mode).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Starts the (stopped) server on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=100",
            self.port,
            self.data_dir.display()
        );
        let log = self.data_dir.join("server.log");
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "-l",
            &log.display().to_string(),
        ]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        run(self
            .as_postgres(&pg_ctl)
            .args(args)
            .arg("-D")
            .arg(&self.data_dir));
    }

    /// The server refuses to run as root: run its tools as `postgres` then.
    fn as_postgres(&self, program: &Path) -> Command {
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let _ = self
            .as_postgres(&pg_ctl)
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data_dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `PG_BIN_DIR`.
fn postgres_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return dir.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/install.sh installs them)")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version with pg_ctl")
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
