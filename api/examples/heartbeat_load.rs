//! Load for `scripts/bench`: many agents sending heartbeats to a real server at a fixed total
//! rate, through the same typed client the agent uses.
//!
//!   heartbeat_load --server URL --token TOKEN [--rate 1000] [--secs 20] [--agents 200]
//!                  [--concurrency 64]
//!
//! Requests are scheduled open-loop (the n-th at start + n/rate); when every connection is
//! busy the schedule slips, which shows as a lower achieved rate rather than hidden queueing.
//! Latency is measured from each request's scheduled time, so waiting for a free connection
//! counts. The achieved rate is requests recorded over the time from the first send to the
//! last answer. Prints `key=value` lines.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustploy_api::Client;
use rustploy_api::agents::{
    ContainerCounts, Cpu, Disk, Docker, HeartbeatRequest, Load, Memory, Network, RegisterRequest,
    Sample,
};
use tokio::sync::{Mutex, Semaphore};

struct Args {
    server: String,
    token: String,
    rate: u64,
    secs: u64,
    agents: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        server: String::new(),
        token: String::new(),
        rate: 1000,
        secs: 20,
        agents: 200,
        concurrency: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = value,
            "--token" => a.token = value,
            "--rate" => a.rate = value.parse().expect("--rate is a number"),
            "--secs" => a.secs = value.parse().expect("--secs is a number"),
            "--agents" => a.agents = value.parse().expect("--agents is a number"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency is a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.server.is_empty() && !a.token.is_empty(),
        "--server and --token are required"
    );
    a
}

/// A sample the size of a real one from a small host.
fn sample(i: usize) -> Sample {
    Sample {
        hostname: format!("bench-host-{i}"),
        agent_version: "0.1.0".into(),
        sampled_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        uptime_secs: 86_400,
        agent_uptime_secs: 3_600,
        cpu: Cpu {
            percent: (i % 100) as f64,
            cores: 4,
        },
        load: Load {
            one: 0.7,
            five: 0.5,
            fifteen: 0.4,
        },
        memory: Memory {
            total_bytes: 8 << 30,
            used_bytes: 3 << 30,
            available_bytes: 5 << 30,
            swap_total_bytes: 1 << 30,
            swap_used_bytes: 0,
        },
        disks: vec![
            Disk {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                file_system: "ext4".into(),
                total_bytes: 80 << 30,
                available_bytes: 50 << 30,
            },
            Disk {
                mount_point: "/var/lib/docker".into(),
                device: "/dev/vdb1".into(),
                file_system: "xfs".into(),
                total_bytes: 200 << 30,
                available_bytes: 120 << 30,
            },
        ],
        network: Network {
            rx_bytes: 123_456_789,
            tx_bytes: 98_765_432,
            rx_bytes_per_sec: 12_345,
            tx_bytes_per_sec: 6_789,
        },
        docker: Docker {
            reachable: true,
            error: None,
            version: Some("27.3.1".into()),
            api_version: Some("1.47".into()),
            containers: Some(ContainerCounts {
                total: 6,
                running: 5,
                exited: 1,
                ..ContainerCounts::default()
            }),
            rustploy: Vec::new(),
            rustploy_total: 0,
        },
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = Client::new(&a.server, a.token.clone()).expect("a valid server URL");
    let mut ids = Vec::with_capacity(a.agents);
    for i in 0..a.agents {
        let r = client
            .register_agent(&RegisterRequest {
                agent_id: None,
                hostname: format!("bench-host-{i}"),
                version: "0.1.0".into(),
                interval_ms: 10_000,
            })
            .await
            .expect("registering a bench agent");
        ids.push(r.agent_id);
    }
    let ids = Arc::new(ids);
    let permits = Arc::new(Semaphore::new(a.concurrency));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity((a.rate * a.secs) as usize)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let total = a.rate * a.secs;
    let period = Duration::from_secs_f64(1.0 / a.rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    // How far behind its schedule the sender fell: near zero means the server kept up.
    let mut lag = Duration::ZERO;
    for n in 0..total {
        let due = start + period.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("open semaphore");
        lag = lag.max(due.elapsed());
        let (client, ids, latencies, errors, first_error) = (
            client.clone(),
            ids.clone(),
            latencies.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let i = n as usize % ids.len();
            let request = HeartbeatRequest {
                agent_id: ids[i],
                sample: sample(i),
            };
            let result = client.heartbeat(&request).await;
            let took = due.elapsed();
            drop(permit);
            match result {
                Ok(_) => latencies.lock().await.push(took),
                Err(e) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    first_error.lock().await.get_or_insert(e.to_string());
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().await.clone();
    l.sort();
    let ok = l.len() as u64;
    println!("sent={total}");
    println!("ok={ok}");
    println!(
        "errors={}",
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Some(e) = first_error.lock().await.as_ref() {
        println!("first_error={e}");
    }
    println!("target_per_sec={}", a.rate);
    println!("achieved_per_sec={:.0}", ok as f64 / elapsed);
    println!("elapsed_secs={elapsed:.1}");
    println!("max_send_lag_ms={:.1}", lag.as_secs_f64() * 1000.0);
    println!("p50_ms={:.1}", percentile(&l, 0.50));
    println!("p99_ms={:.1}", percentile(&l, 0.99));
    println!("max_ms={:.1}", percentile(&l, 1.0));
    println!("agents={}", a.agents);
    println!("concurrency={}", a.concurrency);
}
