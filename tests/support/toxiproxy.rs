//! A real fault proxy between a process and the API server: Toxiproxy (built by
//! deploy/local/cluster.sh from github.com/Shopify/toxiproxy/v2 and put on PATH by `cluster.sh
//! env`), driven through its HTTP API. Faults ("toxics") apply to the connections open at the time
//! as well as to new ones.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{api_server_address, http_request, kubeconfig_path};

/// A running toxiproxy-server with one proxy to the API server.
pub struct Toxiproxy {
    child: Child,
    api: String,
    /// The proxy's name in the server.
    proxy: String,
    /// Where the proxy listens (host:port).
    pub listen: String,
    /// The admin kubeconfig pointed at the proxy.
    pub kubeconfig: PathBuf,
}

/// A free loopback port (bound and released: a small race, fine for a test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Toxiproxy {
    /// Starts toxiproxy-server and a proxy `name` to the API server of the local cluster.
    pub async fn start(name: &str) -> Toxiproxy {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("toxiproxy-{}-{port}.log", std::process::id()));
        let child = Command::new("toxiproxy-server")
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect(
                "cannot start toxiproxy-server: it is built by deploy/local/cluster.sh and put on \
                 PATH by `eval \"$(deploy/local/cluster.sh env)\"`",
            );
        let api = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while http_request("GET", &format!("{api}/version"), "")
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "toxiproxy-server did not answer in 20 s; log: {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let upstream = api_server_address(&kubeconfig_path());
        let body = serde_json::json!({
            "name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": true
        });
        let (code, answer) = http_request("POST", &format!("{api}/proxies"), &body.to_string())
            .await
            .unwrap();
        assert_eq!(code, 201, "toxiproxy refused the proxy: {answer}");
        let listen = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["listen"]
            .as_str()
            .unwrap()
            .to_string();
        // The admin kubeconfig, through the proxy (the API server's certificate names 127.0.0.1).
        let mut config = kube::config::Kubeconfig::read_from(kubeconfig_path()).unwrap();
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(format!("https://{listen}"));
            }
        }
        let kubeconfig = kubeconfig_path().with_file_name(format!("kubeconfig-toxiproxy-{name}"));
        std::fs::write(&kubeconfig, serde_json::to_string(&config).unwrap()).unwrap();
        Toxiproxy {
            child,
            api,
            proxy: name.to_string(),
            listen,
            kubeconfig,
        }
    }

    /// `kubeconfig` (with its own credentials) pointed at the proxy.
    pub fn through(&self, kubeconfig: &Path) -> PathBuf {
        let mut config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(format!("https://{}", self.listen));
            }
        }
        let name = kubeconfig.file_name().unwrap().to_string_lossy();
        let path = kubeconfig.with_file_name(format!("{name}-via-toxiproxy"));
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        path
    }

    /// Adds toxic `name` of `kind` (latency, bandwidth, timeout, reset_peer, ...) on `stream`
    /// (upstream: towards the API server; downstream: back) with `attributes`.
    pub async fn add(&self, name: &str, kind: &str, stream: &str, attributes: serde_json::Value) {
        let body = serde_json::json!({
            "name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes
        });
        let url = format!("{}/proxies/{}/toxics", self.api, self.proxy);
        let (code, answer) = http_request("POST", &url, &body.to_string()).await.unwrap();
        assert!(
            code == 200 || code == 201,
            "toxiproxy refused toxic {name}: {code} {answer}"
        );
    }

    /// Removes toxic `name`. Toxiproxy removes a toxic from every open connection's link, which
    /// waits for the data each holds (a latency toxic holds up to a second of it per connection),
    /// and its admin API answers 503 after 25 s while the removal goes on: then this waits until
    /// the toxic is gone (up to 2 minutes).
    pub async fn remove(&self, name: &str) {
        let url = format!("{}/proxies/{}/toxics/{name}", self.api, self.proxy);
        let (code, answer) = http_request("DELETE", &url, "").await.unwrap();
        if code == 204 || code == 200 {
            return;
        }
        assert_eq!(
            code, 503,
            "toxiproxy could not remove {name}: {code} {answer}"
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, answer) = http_request("GET", &url, "").await.unwrap();
            if code == 404 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "toxiproxy had not removed {name} 2 minutes after its 503: {code} {answer}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
