//! Is a new release ready for traffic? The Docker healthcheck where the container has one,
//! else an HTTP probe of the manifest's path, else a TCP connect to the port, over the ingress
//! network. The verdict is a pure function of what was observed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::docker::ContainerObs;

/// How the routed service's readiness is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Docker,
    Http { path: String },
    Tcp,
}

impl Probe {
    pub fn choose(routed_has_docker_health: bool, path: Option<&str>) -> Self {
        match (routed_has_docker_health, path) {
            (true, _) => Probe::Docker,
            (false, Some(p)) => Probe::Http {
                path: p.to_string(),
            },
            (false, None) => Probe::Tcp,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Probe::Docker => "the container's Docker healthcheck".into(),
            Probe::Http { path } => format!("an HTTP GET of {path}"),
            Probe::Tcp => "a TCP connection to the port".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Not yet; says what is awaited.
    Waiting(String),
    /// Never will be: fail now instead of waiting for the deadline.
    Failed(String),
}

/// Judges the project from its containers and, for HTTP and TCP probes, the last probe of the
/// routed containers (`Ok` when every one answered).
pub fn verdict(
    containers: &[ContainerObs],
    routed: &str,
    probe: &Probe,
    probed: Option<&Result<(), String>>,
) -> Verdict {
    for c in containers {
        let crashed = c.state == "exited" && c.exit_code.unwrap_or(0) != 0
            || c.state == "dead"
            || (c.state == "restarting" && c.restart_count > 0);
        if crashed {
            return Verdict::Failed(format!(
                "service '{}' stopped (state {}, exit code {}); see its logs",
                c.service,
                c.state,
                c.exit_code.unwrap_or(-1)
            ));
        }
    }
    let routed: Vec<&ContainerObs> = containers.iter().filter(|c| c.service == routed).collect();
    let Some(first) = routed.first() else {
        return Verdict::Waiting("no container of the routed service yet".into());
    };
    if let Some(c) = routed.iter().find(|c| c.state != "running") {
        return if c.state == "exited" {
            Verdict::Failed(format!(
                "the routed service '{}' exited (code {})",
                c.service,
                c.exit_code.unwrap_or(-1)
            ))
        } else {
            Verdict::Waiting(format!("container {} is {}", c.name, c.state))
        };
    }
    if routed.iter().any(|c| c.address.is_none()) {
        return Verdict::Waiting(format!(
            "service '{}' has no address on the ingress network yet",
            first.service
        ));
    }
    match probe {
        Probe::Docker => {
            if let Some(c) = routed
                .iter()
                .find(|c| c.health.as_deref() == Some("unhealthy"))
            {
                return Verdict::Failed(format!(
                    "the Docker healthcheck of {} reports unhealthy",
                    c.name
                ));
            }
            match routed
                .iter()
                .find(|c| c.health.as_deref() != Some("healthy"))
            {
                None => Verdict::Healthy,
                Some(c) => Verdict::Waiting(format!(
                    "Docker healthcheck of {}: {}",
                    c.name,
                    c.health.as_deref().unwrap_or("not reported")
                )),
            }
        }
        Probe::Http { .. } | Probe::Tcp => match probed {
            Some(Ok(())) => Verdict::Healthy,
            Some(Err(e)) => Verdict::Waiting(e.clone()),
            None => Verdict::Waiting("not probed yet".into()),
        },
    }
}

/// One probe of `address:port`. HTTP counts 2xx and 3xx as healthy.
pub async fn probe_once(
    probe: &Probe,
    address: &str,
    port: u16,
    timeout: Duration,
) -> Result<(), String> {
    let target = format!("{address}:{port}");
    let attempt = async {
        let mut stream = TcpStream::connect(&target)
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        let Probe::Http { path } = probe else {
            return Ok(());
        };
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: rustploy-health\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing to {target}: {e}"))?;
        let mut head = vec![0u8; 64];
        let n = stream
            .read(&mut head)
            .await
            .map_err(|e| format!("reading from {target}: {e}"))?;
        let line = String::from_utf8_lossy(&head[..n]);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{target} did not answer HTTP"))?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("GET {path} on {target} answered {status}"))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{target} did not answer within {} ms",
                timeout.as_millis()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(service: &str, state: &str, health: Option<&str>, exit: i64) -> ContainerObs {
        ContainerObs {
            id: format!("{service}-id"),
            name: format!("p_{service}_1"),
            project: "p".into(),
            service: service.into(),
            deployment: Some(1),
            state: state.into(),
            health: health.map(String::from),
            exit_code: Some(exit),
            restart_count: 0,
            address: Some("172.18.0.2".into()),
            image_id: None,
            started_at: None,
            exposed_ports: vec![8080],
        }
    }

    #[test]
    fn the_docker_healthcheck_decides_when_there_is_one() {
        let p = Probe::choose(true, Some("/x"));
        assert_eq!(p, Probe::Docker);
        let ok = [
            c("web", "running", Some("healthy"), 0),
            c("worker", "running", None, 0),
        ];
        assert_eq!(verdict(&ok, "web", &p, None), Verdict::Healthy);
        let starting = [c("web", "running", Some("starting"), 0)];
        assert!(matches!(
            verdict(&starting, "web", &p, None),
            Verdict::Waiting(_)
        ));
        let bad = [c("web", "running", Some("unhealthy"), 0)];
        assert!(
            matches!(verdict(&bad, "web", &p, None), Verdict::Failed(m) if m.contains("unhealthy"))
        );
    }

    #[test]
    fn probes_decide_otherwise_and_crashes_fail_at_once() {
        let p = Probe::choose(false, Some("/health"));
        assert_eq!(
            p,
            Probe::Http {
                path: "/health".into()
            }
        );
        assert_eq!(Probe::choose(false, None), Probe::Tcp);
        let up = [c("web", "running", None, 0)];
        assert_eq!(verdict(&up, "web", &p, Some(&Ok(()))), Verdict::Healthy);
        assert!(matches!(
            verdict(&up, "web", &p, Some(&Err("503".into()))),
            Verdict::Waiting(_)
        ));
        assert!(matches!(verdict(&up, "web", &p, None), Verdict::Waiting(_)));
        let crashed = [c("web", "running", None, 0), c("worker", "exited", None, 2)];
        assert!(
            matches!(verdict(&crashed, "web", &p, Some(&Ok(()))), Verdict::Failed(m) if m.contains("worker"))
        );
        // A one-shot service that finished cleanly is fine.
        let oneshot = [
            c("web", "running", None, 0),
            c("migrate", "exited", None, 0),
        ];
        assert_eq!(
            verdict(&oneshot, "web", &p, Some(&Ok(()))),
            Verdict::Healthy
        );
        assert!(matches!(verdict(&[], "web", &p, None), Verdict::Waiting(_)));
        let mut no_ip = c("web", "running", None, 0);
        no_ip.address = None;
        assert!(matches!(
            verdict(&[no_ip], "web", &p, Some(&Ok(()))),
            Verdict::Waiting(_)
        ));
    }

    #[tokio::test]
    async fn http_probes_read_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "404 Not Found"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let p = Probe::Http { path: "/".into() };
        let t = Duration::from_secs(2);
        assert_eq!(probe_once(&p, "127.0.0.1", port, t).await, Ok(()));
        assert!(
            probe_once(&p, "127.0.0.1", port, t)
                .await
                .unwrap_err()
                .contains("404")
        );
    }
}
