//! A real OCI registry (Debian's `docker-registry`) on a loopback port for the
//! tests, images pushed with `skopeo`, and a bearer-token gate in front of it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A minimal HTTP/1.0 request to 127.0.0.1:`port`; returns (status, body).
pub fn http(method: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn wait_for(port: u16, path: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http("GET", port, path).is_some() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server on port {port} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server on port {port} did not start");
}

/// A running docker-registry with filesystem storage in a temp dir.
pub struct Registry {
    /// The loopback port.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one (needs Debian's docker-registry package).
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry missing: apt-get install docker-registry");
        wait_for(port, "/v2/", &mut child);
        Registry { port, child, dir }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes an OCI layout (all of its platforms) as `repo:tag`.
    pub fn push(&self, layout: &Path, repo_tag: &str) {
        let status = Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .status()
            .expect("skopeo missing: apt-get install skopeo");
        assert!(status.success(), "skopeo copy to the registry failed");
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bearer-token gate (tests/support/token_gate.py) in front of a registry.
pub struct TokenGate {
    /// The loopback port clients use.
    pub port: u16,
    child: Child,
}

impl TokenGate {
    /// Starts a gate that hands tokens to `user`/`password`.
    pub fn start(registry: &Registry, user: &str, password: &str) -> TokenGate {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/token_gate.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--port",
                &port.to_string(),
                "--backend",
                &registry.port.to_string(),
                "--user",
                user,
                "--password",
                password,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 missing");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "token gate did not start");
        wait_for(port, "/stats", &mut child);
        TokenGate { port, child }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many times each blob was downloaded.
    pub fn blob_gets(&self) -> std::collections::BTreeMap<String, u64> {
        let (_, body) = http("GET", self.port, "/stats").unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["blob_gets"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect()
    }

    /// Slows blob downloads to `bytes_per_second` (0: full speed).
    pub fn set_rate(&self, bytes_per_second: u64) {
        http(
            "POST",
            self.port,
            &format!("/control?rate={bytes_per_second}"),
        )
        .unwrap();
    }
}

impl Drop for TokenGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
