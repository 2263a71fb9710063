//! The checks a component actor runs on its process: readiness (a port, an HTTP 2xx, a file),
//! liveness (the same checks, every `interval`) and the memory limit.
//!
//! Each runs as a task of its own that reports back with a message; none blocks the actor.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::format;
use crate::process;
use crate::spec::{Health, Ready};

/// The longest pause between two readiness checks. The first retry comes after 1 ms and the
/// pause doubles from there: a server usually listens a few milliseconds after its exec, and a
/// fixed pause of this length would make it count as RUNNING that much late.
pub const READY_INTERVAL: Duration = Duration::from_millis(50);
/// How long one readiness check may take.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// The most of an HTTP answer read to find its status.
const MAX_STATUS_LINE: usize = 1024;

/// One check: `Ok` when it passes, else why not.
pub async fn check(
    ready: &Ready,
    addr: Option<SocketAddr>,
    timeout: Duration,
) -> Result<(), String> {
    let run = async {
        match ready {
            Ready::Port => match addr {
                Some(addr) => TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("port {}: {e}", addr.port())),
                None => Ok(()),
            },
            Ready::Http(path) => match addr {
                Some(addr) => http_2xx(addr, path).await,
                None => Err("no port to send the HTTP check to".to_string()),
            },
            Ready::File(path) => match tokio::fs::metadata(path).await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{}: {e}", path.display())),
            },
            // Not polled: the process's READY=1 arrives as a message.
            Ready::Notify => Err("waiting for READY=1 on the notification socket".to_string()),
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", format::duration(timeout))))
}

/// `GET path` answered with a 2xx status.
async fn http_2xx(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("port {}: {e}", addr.port()))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: imageserving-probe\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_STATUS_LINE {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

/// Checks readiness, with pauses from 1 ms growing to [`READY_INTERVAL`], until it passes
/// (true) or `deadline` passes.
pub async fn until_ready(ready: &Ready, addr: Option<SocketAddr>, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    let mut pause = Duration::from_millis(1);
    while Instant::now() < until {
        if check(ready, addr, READY_TIMEOUT).await.is_ok() {
            return true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(READY_INTERVAL);
    }
    false
}

/// Runs the liveness check every `interval`; returns the reason once `max_failed` checks in a
/// row have failed.
pub async fn until_unhealthy(health: &Health, addr: Option<SocketAddr>) -> String {
    let mut failed = 0;
    loop {
        tokio::time::sleep(health.interval).await;
        match check(&health.check, addr, health.timeout).await {
            Ok(()) => failed = 0,
            Err(why) => {
                failed += 1;
                if failed >= health.max_failed {
                    return format!("liveness check failed {failed} times in a row: {why}");
                }
            }
        }
    }
}

/// Memory over its limit, as [`until_over_memory`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverLimit {
    /// The resident memory sampled, in bytes.
    pub used: u64,
    /// The limit, in bytes.
    pub limit: u64,
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restarted: memory {} over limit {}",
            format::bytes(self.used),
            format::bytes(self.limit)
        )
    }
}

/// Samples the resident memory of the component's processes every `interval`; returns once it
/// is above `limit`.
pub async fn until_over_memory(
    tree_id: String,
    component: String,
    pid: u32,
    limit: u64,
    interval: Duration,
) -> OverLimit {
    loop {
        tokio::time::sleep(interval).await;
        let (tree, name) = (tree_id.clone(), component.clone());
        let used = tokio::task::spawn_blocking(move || {
            process::component_memory(&tree, &[(name.clone(), pid)]).remove(&name)
        })
        .await
        .ok()
        .flatten();
        if let Some(used) = used.filter(|&u| u > limit) {
            return OverLimit { used, limit };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_check_wants_a_2xx() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let ready = Ready::Http("/healthz".into());
        assert_eq!(
            check(&ready, Some(addr), Duration::from_secs(5)).await,
            Ok(())
        );
        let err = check(&ready, Some(addr), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("503"), "{err}");
    }

    #[tokio::test]
    async fn port_and_file_checks() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(check(&Ready::Port, Some(addr), Duration::from_secs(5))
            .await
            .is_ok());
        drop(listener);
        assert!(check(&Ready::Port, Some(addr), Duration::from_secs(5))
            .await
            .is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ready");
        let ready = Ready::File(file.clone());
        assert!(check(&ready, None, Duration::from_secs(5)).await.is_err());
        std::fs::write(&file, b"").unwrap();
        assert!(check(&ready, None, Duration::from_secs(5)).await.is_ok());
    }

    #[tokio::test]
    async fn liveness_reports_after_max_failed_in_a_row() {
        let health = Health {
            check: Ready::File("/nonexistent/imageserving-probe".into()),
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(100),
            max_failed: 3,
        };
        let why = tokio::time::timeout(Duration::from_secs(5), until_unhealthy(&health, None))
            .await
            .expect("reported");
        assert!(
            why.starts_with("liveness check failed 3 times in a row"),
            "{why}"
        );
    }
}
