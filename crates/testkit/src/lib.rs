//! The real programs the tests run besides sessiond, installed when the machine lacks them:
//! `redis-server` (Debian), schemathesis (PyPI, in a virtual environment), any Debian package
//! ([`ensure_debian`]).
//!
//! Real `redis-server` processes for the tests: one node ([`RedisServer`], with a password if
//! asked) and a cluster of three masters ([`RedisCluster`]), each on free ports in a
//! temporary directory, stopped (SIGKILL) when dropped. `redis-server` and `redis-cli` come
//! from Debian's `redis-server` package, installed by the first test that needs them when the
//! machine lacks them.
//!
//! A server is ready when it answers `PING` (or asks for a password); the wait polls that, a
//! few milliseconds apart, up to a bound, and fails the test past it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How long a server may take to start, or a cluster to agree.
const START_BOUND: Duration = Duration::from_secs(30);

/// Installs Debian's `redis-server` package (which brings `redis-cli`) unless both commands
/// are there.
pub fn ensure_redis() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| ensure_debian(&["redis-server"], &["redis-server", "redis-cli"]));
}

/// Installs Debian's `packages` unless every one of `commands` is there.
pub fn ensure_debian(packages: &[&str], commands: &[&str]) {
    if commands.iter().all(|c| has(c)) {
        return;
    }
    apt_install(packages);
    for command in commands {
        assert!(
            has(command),
            "{command} is missing after installing {packages:?}"
        );
    }
}

/// `apt-get install -y packages`, after `apt-get update` when the first try fails.
fn apt_install(packages: &[&str]) {
    // One apt-get at a time: dpkg takes a lock.
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _apt = APT.lock().unwrap_or_else(|p| p.into_inner());
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let updated = Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(updated && install(), "could not install {packages:?}");
    }
}

/// The schemathesis version the API tests run.
pub const SCHEMATHESIS: &str = "4.32.5";

/// The `schemathesis` command of a Python virtual environment in `dir` holding
/// [`SCHEMATHESIS`], made (with `python3 -m venv` and `pip install`, from PyPI) unless it is
/// there; Debian's `python3-venv` is installed first when the machine lacks it.
pub fn ensure_schemathesis(dir: &Path) -> std::path::PathBuf {
    let venv = dir.join(format!("schemathesis-{SCHEMATHESIS}"));
    let command = venv.join("bin").join("schemathesis");
    let works = || {
        Command::new(&command)
            .arg("--version")
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS)
            })
    };
    if works() {
        return command;
    }
    ensure_debian(&["python3"], &["python3"]);
    let venv_ok = || {
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !venv_ok() {
        // python3 without its venv module (ensurepip): Debian's python3-venv brings it.
        apt_install(&["python3-venv"]);
        assert!(venv_ok(), "python3 -m venv {} failed", venv.display());
    }
    let installed = Command::new(venv.join("bin").join("pip"))
        .args(["install", "-q", &format!("schemathesis=={SCHEMATHESIS}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed && works(),
        "could not install schemathesis {SCHEMATHESIS}"
    );
    command
}

fn has(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port free on 127.0.0.1 now, whose cluster bus port (+10000) is free too.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("an address").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// What a server answers to `PING`, if it answers within a second.
fn ping(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(b"PING\r\n").ok()?;
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).ok()?;
    Some(String::from_utf8_lossy(&answer[..n]).into_owned())
}

/// One `redis-server` process.
pub struct RedisServer {
    port: u16,
    /// The TLS port, when it has one (the plain port stays open for the readiness check).
    tls_port: Option<u16>,
    password: Option<String>,
    args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A node on a free port, nothing persisted.
    pub fn start() -> RedisServer {
        RedisServer::launch(None, &[])
    }

    /// A node that asks for `password` (`requirepass`).
    pub fn with_password(password: &str) -> RedisServer {
        RedisServer::launch(Some(password), &[])
    }

    /// A node with these further `redis-server` arguments (`--appendfsync always`, …).
    pub fn with_args(args: &[&str]) -> RedisServer {
        RedisServer::launch(None, args)
    }

    /// A node that also listens with TLS, with a certificate for `localhost` and `127.0.0.1`
    /// signed by a CA made here ([`RedisServer::ca_file`]); clients need no certificate.
    pub fn with_tls() -> RedisServer {
        let certs = tempfile::tempdir().expect("a temporary directory");
        make_certificates(certs.path());
        let file = |name: &str| certs.path().join(name).display().to_string();
        let tls_port = free_port();
        let mut server = RedisServer::launch(
            None,
            &[
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                &file("server.crt"),
                "--tls-key-file",
                &file("server.key"),
                "--tls-ca-cert-file",
                &file("ca.crt"),
                "--tls-auth-clients",
                "no",
            ],
        );
        std::fs::copy(certs.path().join("ca.crt"), server.dir().join("ca.crt"))
            .expect("the CA certificate is copied");
        server.tls_port = Some(tls_port);
        server
    }

    /// The CA certificate (PEM) of a server made by [`RedisServer::with_tls`].
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `rediss://localhost:TLS_PORT` of a server made by [`RedisServer::with_tls`].
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://localhost:{}",
            self.tls_port.expect("a TLS server")
        )
    }

    fn launch(password: Option<&str>, extra: &[&str]) -> RedisServer {
        ensure_redis();
        let mut args: Vec<String> = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(password) = password {
            args.extend(["--requirepass".into(), password.into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            port: free_port(),
            tls_port: None,
            password: password.map(str::to_owned),
            args,
            child: None,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            match ping(self.port) {
                Some(a) if a.starts_with("+PONG") || a.starts_with("-NOAUTH") => return,
                _ if started.elapsed() > START_BOUND => {
                    panic!("redis-server on port {} did not start", self.port)
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the process (SIGKILL); the port stays this server's for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let ok = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {pid}");
    }

    /// Runs `redis-cli` against this server with `args`; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            command.args(["-a", p, "--no-auth-warning"]);
        }
        let out = command.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen process too.
        self.stop();
    }
}

/// Writes `ca.crt`, `server.crt` and `server.key` (P-256, valid one day, the server's for
/// `localhost` and `127.0.0.1`) into `dir`, with the `openssl` command.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &key,
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat()
        .into_iter()
        .chain(["-subj", "/CN=sessiond test CA", "-days", "1"])
        .collect::<Vec<_>>(),
    );
    openssl(
        &[
            &["req"][..],
            &key,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat()
        .into_iter()
        .chain(["-subj", "/CN=localhost"])
        .collect::<Vec<_>>(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("the extension file is written");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
}

/// A cluster of three masters, no replicas, every slot assigned.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three nodes joined by `redis-cli --cluster create`, ready when each says
    /// `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::with_args(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let started = Instant::now();
        while !nodes
            .iter()
            .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(started.elapsed() < START_BOUND, "the cluster did not agree");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Moves `slots` hash slots, with their keys, from node `from` to node `to` (indexes into
    /// [`RedisCluster::nodes`]) with `redis-cli --cluster reshard`; clients that knew the old
    /// places are then answered `MOVED`.
    pub fn move_slots(&self, from: usize, to: usize, slots: usize) {
        let id = |i: usize| self.nodes[i].cli(&["cluster", "myid"]);
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", self.nodes[from].port()))
            .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "reshard: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let started = Instant::now();
        while !self
            .nodes
            .iter()
            .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(started.elapsed() < START_BOUND, "the cluster did not agree");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
