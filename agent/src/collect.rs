//! Host telemetry: one [`Sample`] per call, from sysinfo and the Docker engine.
//!
//! CPU use and network rates are averages since the previous call, so the collector keeps the
//! previous readings (and nothing else: no history).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustploy_api::agents::{Cpu, Disk, Load, MAX_DISKS, MAX_NAME, Memory, Network, Sample};
use sysinfo::{DiskRefreshKind, Disks, Networks, System};

use crate::docker::Engine;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Filesystems that are not storage: memory-backed, virtual, or container layers.
const NOT_STORAGE: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "ramfs",
    "overlay",
    "aufs",
    "squashfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "nsfs",
    "tracefs",
    "debugfs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "efivarfs",
    "binfmt_misc",
    "autofs",
    "hugetlbfs",
    "fuse.lxcfs",
    "fuse.snapfuse",
    "iso9660",
    "rpc_pipefs",
    "nfsd",
];

/// Network interfaces whose traffic is counted elsewhere or never leaves the host.
const NOT_PHYSICAL: &[&str] = &[
    "lo", "veth", "docker", "br-", "virbr", "cni", "flannel", "cali", "vxlan", "kube",
];

/// sysinfo's parts are `None` on a platform it cannot read; the agent then reports zeros and
/// empty lists rather than stopping.
pub struct Collector {
    system: Option<System>,
    disks: Option<Disks>,
    networks: Option<Networks>,
    engine: Engine,
    started: Instant,
    last_network: Option<(Instant, u64, u64)>,
}

impl Collector {
    /// Takes the first readings that later averages start from. The Docker engine gets at most
    /// `docker_budget` per sample.
    pub fn new(docker_host: &str, docker_budget: Duration) -> Self {
        let mut system = System::new().ok();
        if let Some(s) = &mut system {
            s.refresh_cpu_usage();
        }
        Self {
            system,
            disks: Disks::new().ok(),
            networks: Networks::new().ok(),
            engine: Engine::new(docker_host, docker_budget),
            started: Instant::now(),
            last_network: None,
        }
    }

    /// A fresh sample of the host and its Docker engine.
    pub async fn sample(&mut self) -> Sample {
        let docker = self.engine.report().await;
        let (cpu, memory) = self.cpu_and_memory();
        let load = System::load_average().unwrap_or(sysinfo::LoadAvg {
            one: 0.0,
            five: 0.0,
            fifteen: 0.0,
        });
        Sample {
            hostname: hostname(),
            agent_version: VERSION.to_string(),
            sampled_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            uptime_secs: System::uptime().unwrap_or(0),
            agent_uptime_secs: self.started.elapsed().as_secs(),
            cpu,
            load: Load {
                one: finite(load.one).max(0.0),
                five: finite(load.five).max(0.0),
                fifteen: finite(load.fifteen).max(0.0),
            },
            memory,
            disks: self.disks(),
            network: self.network(),
            docker,
        }
    }

    fn cpu_and_memory(&mut self) -> (Cpu, Memory) {
        let Some(system) = &mut self.system else {
            return (
                Cpu {
                    percent: 0.0,
                    cores: 1,
                },
                Memory::default(),
            );
        };
        system.refresh_cpu_usage();
        system.refresh_memory();
        let total = system.total_memory();
        let cpu = Cpu {
            percent: finite(system.global_cpu_usage() as f64).clamp(0.0, 100.0),
            cores: (system.cpus().len() as u32).max(1),
        };
        let memory = Memory {
            total_bytes: total,
            used_bytes: system.used_memory().min(total),
            available_bytes: system.available_memory().min(total),
            swap_total_bytes: system.total_swap(),
            swap_used_bytes: system.used_swap().min(system.total_swap()),
        };
        (cpu, memory)
    }

    fn disks(&mut self) -> Vec<Disk> {
        let Some(disks) = &mut self.disks else {
            return Vec::new();
        };
        disks.refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        let listed = disks.iter().map(|d| Disk {
            mount_point: d.mount_point().to_string_lossy().into_owned(),
            device: d.name().to_string_lossy().into_owned(),
            file_system: d.file_system().to_string_lossy().into_owned(),
            total_bytes: d.total_space(),
            available_bytes: d.available_space().min(d.total_space()),
        });
        real_filesystems(listed)
    }

    fn network(&mut self) -> Network {
        let Some(networks) = &mut self.networks else {
            return Network::default();
        };
        networks.refresh(true);
        let (rx, tx) = networks
            .iter()
            .filter(|(name, _)| physical(&name.to_string_lossy()))
            .fold((0u64, 0u64), |(rx, tx), (_, n)| {
                (
                    rx.saturating_add(n.total_received()),
                    tx.saturating_add(n.total_transmitted()),
                )
            });
        let now = Instant::now();
        let (rx_rate, tx_rate) = match self.last_network {
            Some((then, prx, ptx)) => {
                let secs = now.duration_since(then).as_secs_f64().max(0.001);
                (
                    (rx.saturating_sub(prx) as f64 / secs) as u64,
                    (tx.saturating_sub(ptx) as f64 / secs) as u64,
                )
            }
            None => (0, 0),
        };
        self.last_network = Some((now, rx, tx));
        Network {
            rx_bytes: rx,
            tx_bytes: tx,
            rx_bytes_per_sec: rx_rate,
            tx_bytes_per_sec: tx_rate,
        }
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

pub fn hostname() -> String {
    let name = System::host_name().unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let mut name = name.trim().to_string();
    if name.is_empty() {
        name = "unknown".into();
    }
    truncate(name)
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Whether traffic on interface `name` leaves the host.
pub fn physical(name: &str) -> bool {
    !NOT_PHYSICAL.iter().any(|p| name.starts_with(p))
}

/// Storage only, one entry per device (a device mounted in several places, as bind mounts are,
/// is listed once at its shortest mount point), at most [`MAX_DISKS`].
pub fn real_filesystems(disks: impl Iterator<Item = Disk>) -> Vec<Disk> {
    let mut by_device: HashMap<String, Disk> = HashMap::new();
    for d in disks {
        if NOT_STORAGE.contains(&d.file_system.as_str()) || d.total_bytes == 0 {
            continue;
        }
        let key = if d.device.is_empty() {
            d.mount_point.clone()
        } else {
            d.device.clone()
        };
        let d = Disk {
            mount_point: truncate(d.mount_point),
            device: truncate(d.device),
            file_system: truncate(d.file_system),
            ..d
        };
        if d.mount_point.chars().any(char::is_control) {
            continue;
        }
        match by_device.get(&key) {
            Some(kept) if kept.mount_point.len() <= d.mount_point.len() => {}
            _ => {
                by_device.insert(key, d);
            }
        }
    }
    let mut out: Vec<Disk> = by_device.into_values().collect();
    out.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    out.truncate(MAX_DISKS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(mount: &str, device: &str, fs: &str, total: u64) -> Disk {
        Disk {
            mount_point: mount.into(),
            device: device.into(),
            file_system: fs.into(),
            total_bytes: total,
            available_bytes: total / 2,
        }
    }

    #[test]
    fn only_real_filesystems_once_per_device() {
        let listed = vec![
            disk("/", "/dev/sda1", "ext4", 100),
            disk("/etc/hosts", "/dev/sda1", "ext4", 100),
            disk("/dev/shm", "shm", "tmpfs", 64),
            disk(
                "/var/lib/docker/overlay2/x/merged",
                "overlay",
                "overlay",
                100,
            ),
            disk("/data", "/dev/sdb1", "xfs", 500),
            disk("/empty", "none", "ext4", 0),
        ];
        let kept: Vec<(String, String)> = real_filesystems(listed.into_iter())
            .into_iter()
            .map(|d| (d.mount_point, d.device))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("/".to_string(), "/dev/sda1".to_string()),
                ("/data".to_string(), "/dev/sdb1".to_string())
            ]
        );
    }

    #[test]
    fn bridges_and_container_links_are_not_physical() {
        assert!(physical("eth0") && physical("enp3s0") && physical("wlan0"));
        for virt in ["lo", "docker0", "veth12ab", "br-0a1b", "virbr0", "cni0"] {
            assert!(!physical(virt), "{virt}");
        }
    }

    #[tokio::test]
    async fn a_sample_of_this_host_passes_the_servers_checks() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let mut c = Collector::new(
            &format!("unix://{}", sock.display()),
            Duration::from_secs(1),
        );
        tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
        let s = c.sample().await;
        assert_eq!(s.check(), Ok(()), "{s:?}");
        assert!(s.memory.total_bytes > 0 && s.cpu.cores > 0, "{s:?}");
        assert!(!s.docker.reachable);
        let json = serde_json::to_vec(&s).unwrap();
        assert!(json.len() < 16 * 1024, "a sample is {} bytes", json.len());
    }
}
