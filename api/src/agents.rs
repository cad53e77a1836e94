//! Agents: registration, heartbeats with host telemetry, and the server's view of each agent.
//!
//! A heartbeat sample accepts fields it does not know (they are dropped), so that an agent newer
//! than its server keeps reporting during a rolling upgrade. Liveness is judged by the time
//! the server *received* a heartbeat; `sampled_at_ms` is the agent's own clock, kept only as
//! information.

use serde::{Deserialize, Serialize};

use crate::{Client, Error, Page};

/// The largest heartbeat or registration body the server accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// At most this many filesystems per sample.
pub const MAX_DISKS: usize = 64;
/// At most this many Rustploy containers per sample; the agent reports the rest only as a count.
pub const MAX_CONTAINERS: usize = 100;
/// Heartbeat intervals an agent may ask for, in milliseconds.
pub const INTERVAL_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;
/// The longest name (host, mount point, container) a sample may carry.
pub const MAX_NAME: usize = 255;
/// The longest error text a sample may carry.
pub const MAX_ERROR: usize = 1024;

/// Ordered from online to offline: the monitor only ever moves an agent down this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Online,
    Stale,
    Offline,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Online => "online",
            AgentState::Stale => "stale",
            AgentState::Offline => "offline",
        }
    }

    /// Every state, from online to offline.
    pub const ALL: &'static [AgentState] =
        &[AgentState::Online, AgentState::Stale, AgentState::Offline];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(AgentState::Online),
            "stale" => Some(AgentState::Stale),
            "offline" => Some(AgentState::Offline),
            _ => None,
        }
    }
}

/// Stored as its name, like the enums of [`crate::states`]; a name this version does not know
/// is an error when read.
#[cfg(feature = "sql")]
impl rusqlite::types::ToSql for AgentState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
    }
}

#[cfg(feature = "sql")]
impl rusqlite::types::FromSql for AgentState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = value.as_str()?;
        AgentState::parse(s).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(Box::new(crate::states::UnknownVariant {
                kind: "AgentState",
                value: s.chars().take(64).collect(),
            }))
        })
    }
}

/// `POST /api/v1/agents/register`. Registering again with the id from an earlier registration
/// keeps that identity (and updates the host's name, version and interval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The id this host was given before, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<i64>,
    pub hostname: String,
    pub version: String,
    /// How often the agent will send heartbeats.
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub agent_id: i64,
    /// Whether a new agent was created (false: the id given was kept).
    pub created: bool,
}

/// `POST /api/v1/agents/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub agent_id: i64,
    pub sample: Sample,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub agent_id: i64,
    /// Always `online`: a heartbeat brings its agent back at once.
    pub state: AgentState,
    /// The state before this heartbeat.
    pub previous_state: AgentState,
    /// When the server received it (RFC 3339): the time that counts.
    pub received_at: String,
}

/// One reading of a host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub hostname: String,
    pub agent_version: String,
    /// The agent's clock when it took the sample (milliseconds since the epoch).
    pub sampled_at_ms: u64,
    /// Seconds since the host booted.
    pub uptime_secs: u64,
    /// Seconds since the agent started.
    #[serde(default)]
    pub agent_uptime_secs: u64,
    pub cpu: Cpu,
    pub load: Load,
    pub memory: Memory,
    /// Real filesystems (no tmpfs, overlay, proc and the like), one per device.
    #[serde(default)]
    pub disks: Vec<Disk>,
    pub network: Network,
    pub docker: Docker,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Busy share of all cores since the previous sample, 0 to 100.
    pub percent: f64,
    pub cores: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    #[serde(default)]
    pub swap_total_bytes: u64,
    #[serde(default)]
    pub swap_used_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub mount_point: String,
    #[serde(default)]
    pub device: String,
    pub file_system: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Bytes over the host's physical interfaces (loopback, bridges and veth pairs left out, so
/// that container traffic is not counted twice).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Totals since the interfaces came up.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Averages since the previous sample.
    #[serde(default)]
    pub rx_bytes_per_sec: u64,
    #[serde(default)]
    pub tx_bytes_per_sec: u64,
}

/// The Docker engine as the agent found it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Docker {
    pub reachable: bool,
    /// Why the engine could not be asked (set when `reachable` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Every container on the host, by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<ContainerCounts>,
    /// Rustploy's containers (those with its app label), at most [`MAX_CONTAINERS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rustploy: Vec<ContainerUsage>,
    /// How many Rustploy containers there are in all, listed or not.
    #[serde(default)]
    pub rustploy_total: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerCounts {
    pub total: u32,
    pub running: u32,
    pub paused: u32,
    pub restarting: u32,
    pub exited: u32,
    pub created: u32,
    pub dead: u32,
    #[serde(default)]
    pub removing: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    /// The short (12 hex digit) container id.
    pub id: String,
    pub name: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub state: String,
    /// Share of one core (100 = one core busy) since the previous sample; absent on the first
    /// sample of a container and for containers that are not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

/// Why a sample or registration is refused: the field (a JSON path) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn name(field: &str, value: &str, required: bool) -> Result<(), Invalid> {
    if required && value.trim().is_empty() {
        return Err(Invalid::new(field, format!("{field} must not be empty")));
    }
    if value.len() > MAX_NAME {
        return Err(Invalid::new(
            field,
            format!("{field} is longer than {MAX_NAME} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

fn between(field: &str, value: f64, low: f64, high: f64) -> Result<(), Invalid> {
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!("{field} must be between {low} and {high}, got {value}"),
        ))
    }
}

impl RegisterRequest {
    pub fn check(&self) -> Result<(), Invalid> {
        if self.agent_id.is_some_and(|id| id <= 0) {
            return Err(Invalid::new("agent_id", "agent_id must be positive"));
        }
        name("hostname", &self.hostname, true)?;
        name("version", &self.version, true)?;
        if !INTERVAL_MS.contains(&self.interval_ms) {
            return Err(Invalid::new(
                "interval_ms",
                format!(
                    "interval_ms must be between {} and {}",
                    INTERVAL_MS.start(),
                    INTERVAL_MS.end()
                ),
            ));
        }
        Ok(())
    }
}

impl Sample {
    /// Checks the values a well-behaved agent can produce; anything else is refused rather
    /// than stored.
    pub fn check(&self) -> Result<(), Invalid> {
        name("sample.hostname", &self.hostname, true)?;
        name("sample.agent_version", &self.agent_version, true)?;
        between("sample.cpu.percent", self.cpu.percent, 0.0, 100.0)?;
        if self.cpu.cores == 0 || self.cpu.cores > 65_536 {
            return Err(Invalid::new(
                "sample.cpu.cores",
                "sample.cpu.cores must be between 1 and 65536",
            ));
        }
        for (field, v) in [
            ("sample.load.one", self.load.one),
            ("sample.load.five", self.load.five),
            ("sample.load.fifteen", self.load.fifteen),
        ] {
            between(field, v, 0.0, 1e6)?;
        }
        let m = &self.memory;
        if m.used_bytes > m.total_bytes || m.available_bytes > m.total_bytes {
            return Err(Invalid::new(
                "sample.memory",
                "used and available memory must not exceed the total",
            ));
        }
        if m.swap_used_bytes > m.swap_total_bytes {
            return Err(Invalid::new(
                "sample.memory.swap_used_bytes",
                "used swap must not exceed the total",
            ));
        }
        if self.disks.len() > MAX_DISKS {
            return Err(Invalid::new(
                "sample.disks",
                format!("at most {MAX_DISKS} disks per sample"),
            ));
        }
        for (i, d) in self.disks.iter().enumerate() {
            name(
                &format!("sample.disks[{i}].mount_point"),
                &d.mount_point,
                true,
            )?;
            name(&format!("sample.disks[{i}].device"), &d.device, false)?;
            name(
                &format!("sample.disks[{i}].file_system"),
                &d.file_system,
                false,
            )?;
            if d.available_bytes > d.total_bytes {
                return Err(Invalid::new(
                    format!("sample.disks[{i}].available_bytes"),
                    "available space must not exceed the total",
                ));
            }
        }
        self.docker.check()
    }
}

impl Docker {
    fn check(&self) -> Result<(), Invalid> {
        if let Some(e) = &self.error
            && e.len() > MAX_ERROR
        {
            return Err(Invalid::new(
                "sample.docker.error",
                format!("sample.docker.error is longer than {MAX_ERROR} bytes"),
            ));
        }
        for (field, v) in [
            ("sample.docker.version", &self.version),
            ("sample.docker.api_version", &self.api_version),
        ] {
            name(field, v.as_deref().unwrap_or_default(), false)?;
        }
        if self.rustploy.len() > MAX_CONTAINERS {
            return Err(Invalid::new(
                "sample.docker.rustploy",
                format!("at most {MAX_CONTAINERS} containers per sample"),
            ));
        }
        for (i, c) in self.rustploy.iter().enumerate() {
            let f = |s: &str| format!("sample.docker.rustploy[{i}].{s}");
            name(&f("id"), &c.id, true)?;
            name(&f("name"), &c.name, false)?;
            name(&f("app"), &c.app, true)?;
            name(&f("state"), &c.state, true)?;
            name(
                &f("deployment"),
                c.deployment.as_deref().unwrap_or(""),
                false,
            )?;
            name(&f("service"), c.service.as_deref().unwrap_or(""), false)?;
            if let Some(p) = c.cpu_percent {
                between(&f("cpu_percent"), p, 0.0, 6_553_600.0)?;
            }
        }
        Ok(())
    }
}

/// The server's view of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: i64,
    pub hostname: String,
    pub version: Option<String>,
    pub state: AgentState,
    pub interval_ms: u64,
    pub registered_at: String,
    /// When the server last received a heartbeat (RFC 3339).
    pub last_heartbeat_at: Option<String>,
    pub state_changed_at: String,
    /// The token the agent registered with (null once that token is deleted).
    pub token_id: Option<i64>,
    pub latest_sample: Option<Sample>,
}

/// `GET /api/v1/agents/{id}`: the agent, its newest samples and its state changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub agent: AgentView,
    /// Newest first.
    pub recent_samples: Vec<SampleRecord>,
    /// Newest first.
    pub transitions: Vec<Transition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub received_at: String,
    pub sample: Sample,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: AgentState,
    pub to: AgentState,
    pub at: String,
}

impl Client {
    /// Registers this host, or confirms the identity it had.
    pub async fn register_agent(&self, req: &RegisterRequest) -> Result<RegisterResponse, Error> {
        self.post("/api/v1/agents/register", req).await
    }

    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<HeartbeatResponse, Error> {
        self.post("/api/v1/agents/heartbeat", req).await
    }

    /// One page of agents, newest first.
    pub async fn agents(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<AgentView>, Error> {
        let mut path = String::from("/api/v1/agents");
        let mut sep = '?';
        if let Some(limit) = limit {
            path.push_str(&format!("{sep}limit={limit}"));
            sep = '&';
        }
        if let Some(cursor) = cursor {
            // Cursors are ids the server handed out: digits, nothing to escape.
            path.push_str(&format!("{sep}cursor={cursor}"));
        }
        self.get(&path).await
    }

    pub async fn agent(&self, id: i64) -> Result<AgentDetail, Error> {
        self.get(&format!("/api/v1/agents/{id}")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            hostname: "web-1".into(),
            agent_version: "0.1.0".into(),
            sampled_at_ms: 1,
            uptime_secs: 10,
            agent_uptime_secs: 1,
            cpu: Cpu {
                percent: 12.5,
                cores: 2,
            },
            load: Load {
                one: 0.5,
                five: 0.4,
                fifteen: 0.3,
            },
            memory: Memory {
                total_bytes: 100,
                used_bytes: 40,
                available_bytes: 60,
                swap_total_bytes: 0,
                swap_used_bytes: 0,
            },
            disks: vec![Disk {
                mount_point: "/".into(),
                device: "/dev/sda1".into(),
                file_system: "ext4".into(),
                total_bytes: 10,
                available_bytes: 5,
            }],
            network: Network::default(),
            docker: Docker {
                reachable: false,
                error: Some("no socket".into()),
                ..Docker::default()
            },
        }
    }

    #[test]
    fn a_sample_round_trips_and_an_unreachable_engine_is_small() {
        let s = sample();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["docker"],
            serde_json::json!({ "reachable": false, "error": "no socket", "rustploy_total": 0 })
        );
        let back: Sample = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_accepted_for_newer_agents() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json["gpu"] = serde_json::json!({ "percent": 3 });
        let back: Sample = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn impossible_values_name_their_field() {
        type Break = fn(&mut Sample);
        let cases: Vec<(Break, &str)> = vec![
            (|s| s.hostname.clear(), "sample.hostname"),
            (|s| s.cpu.percent = 100.5, "sample.cpu.percent"),
            (|s| s.cpu.cores = 0, "sample.cpu.cores"),
            (|s| s.load.five = -1.0, "sample.load.five"),
            (|s| s.memory.used_bytes = 101, "sample.memory"),
            (
                |s| s.disks[0].available_bytes = 11,
                "sample.disks[0].available_bytes",
            ),
            (
                |s| s.disks[0].mount_point = "/x\n".into(),
                "sample.disks[0].mount_point",
            ),
            (|s| s.disks = vec![Disk::default(); 65], "sample.disks"),
            (
                |s| s.docker.error = Some("e".repeat(2000)),
                "sample.docker.error",
            ),
        ];
        for (break_it, field) in cases {
            let mut s = sample();
            break_it(&mut s);
            assert_eq!(s.check().map_err(|e| e.field), Err(field.to_string()));
        }
    }

    #[test]
    fn registration_bounds_the_interval() {
        let mut r = RegisterRequest {
            agent_id: None,
            hostname: "h".into(),
            version: "0.1.0".into(),
            interval_ms: 10_000,
        };
        assert_eq!(r.check(), Ok(()));
        r.interval_ms = 999;
        assert_eq!(r.check().unwrap_err().field, "interval_ms");
        r.interval_ms = 1000;
        r.agent_id = Some(0);
        assert_eq!(r.check().unwrap_err().field, "agent_id");
    }
}
