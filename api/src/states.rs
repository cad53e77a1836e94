//! The states and kinds the ledger stores as text and the wire carries as strings.
//!
//! Each enum is defined once, here, by [`text_enum!`]: it serialises as its snake_case name in
//! JSON, and (with the `sql` feature, which the ledger turns on) is stored in and read from
//! SQLite through one `ToSql`/`FromSql` pair. A value the code does not know is an error when
//! read, never a silent default.

/// An unknown name for one of the enums below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
}

impl std::fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}' is not a known {}", self.value, self.kind)
    }
}

impl std::error::Error for UnknownVariant {}

/// Defines a fieldless enum whose variants travel as fixed names.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(s: &str) -> Result<Self, UnknownVariant> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownVariant {
                        kind: stringify!($name),
                        value: s.chars().take(64).collect(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

text_enum! {
    /// Where a deployment is in its life. `queued` and `running` are active; the rest are final.
    pub enum DeploymentState {
        Queued = "queued",
        Running = "running",
        Healthy = "healthy",
        Failed = "failed",
        Cancelled = "cancelled",
        Superseded = "superseded",
    }
}

impl DeploymentState {
    /// Still queued or running: it can be cancelled, and its log may grow.
    pub fn is_active(self) -> bool {
        matches!(self, DeploymentState::Queued | DeploymentState::Running)
    }
}

text_enum! {
    /// The step a running deployment is at.
    pub enum DeployStep {
        Fetch = "fetch",
        Prepare = "prepare",
        Build = "build",
        Start = "start",
        Health = "health",
        Switch = "switch",
    }
}

text_enum! {
    /// A job in the durable queue.
    pub enum JobState {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Dead = "dead",
        Cancelled = "cancelled",
    }
}

impl JobState {
    /// Queued or running: not finished yet.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

text_enum! {
    /// A backup of a managed service.
    pub enum BackupState {
        Running = "running",
        Done = "done",
        Failed = "failed",
    }
}

text_enum! {
    /// Whether Caddy serves a domain yet.
    pub enum DomainStatus {
        Pending = "pending",
        Routed = "routed",
        Error = "error",
    }
}

text_enum! {
    /// A dashboard user's role.
    pub enum Role {
        Owner = "owner",
        Maintainer = "maintainer",
        Viewer = "viewer",
    }
}

text_enum! {
    /// What an API token may do: `read`; `deploy` (which includes read); `admin` (everything);
    /// `agent` (only the agent endpoints). `ALL` is in the order forms offer them.
    pub enum Scope {
        Read = "read",
        Deploy = "deploy",
        Admin = "admin",
        Agent = "agent",
    }
}

/// Scopes sort by name, not by declaration: a token's scopes have always been kept sorted that
/// way, in its JSON and in the ledger's comma-separated column, and both stay byte for byte.
impl Ord for Scope {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Scope {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

text_enum! {
    /// What a webhook delivery led to.
    pub enum WebhookOutcome {
        Pending = "pending",
        Deployed = "deployed",
        Ignored = "ignored",
        Rejected = "rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + std::str::FromStr + serde::Serialize,
        T: serde::de::DeserializeOwned + std::fmt::Display,
        <T as std::str::FromStr>::Err: std::fmt::Debug,
    {
        for v in all {
            let text = v.to_string();
            assert_eq!(text.parse::<T>().unwrap(), *v);
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *v);
        }
    }

    #[test]
    fn every_variant_round_trips_through_text_and_json() {
        round_trips(DeploymentState::ALL);
        round_trips(DeployStep::ALL);
        round_trips(JobState::ALL);
        round_trips(BackupState::ALL);
        round_trips(DomainStatus::ALL);
        round_trips(Role::ALL);
        round_trips(WebhookOutcome::ALL);
        round_trips(Scope::ALL);
    }

    #[test]
    fn scopes_sort_by_name() {
        let mut all = Scope::ALL.to_vec();
        all.sort();
        let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["admin", "agent", "deploy", "read"]);
    }

    #[test]
    fn an_unknown_name_is_refused_and_named() {
        let e = "paused".parse::<DeploymentState>().unwrap_err();
        assert_eq!(e.to_string(), "'paused' is not a known DeploymentState");
        assert!(serde_json::from_str::<JobState>("\"Queued\"").is_err());
    }
}

// Domains and the routes RouterSync serves.

text_enum! {
    /// How a domain gets its certificate.
    #[derive(PartialOrd, Ord)]
    pub enum TlsMode {
        /// ACME (Let's Encrypt / ZeroSSL), managed by Caddy.
        Auto = "auto",
        /// Caddy's own local certificate authority.
        Internal = "internal",
        /// A certificate and key the user keeps on this host.
        Custom = "custom",
        /// Plain HTTP only.
        Off = "off",
    }
}

impl TlsMode {
    pub fn is_tls(self) -> bool {
        self != TlsMode::Off
    }

    /// The scheme a domain with this mode answers on.
    pub fn scheme(self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}

text_enum! {
    /// Where a domain came from.
    pub enum DomainSource {
        /// Added through the API or the dashboard; removed the same way.
        User = "user",
        /// `<app>.<base domain>`, kept in step with the server's setting by RouterSync.
        Base = "base",
    }
}
