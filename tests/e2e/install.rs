//! The Debian package on a fresh Debian 12 that runs systemd: `scripts/package` builds it from
//! the workspace's binaries, `scripts/install` installs it (apt brings Caddy, git, Docker and
//! compose from Debian) into a container booted with systemd, and the result is checked the
//! way an operator would: the files, the user, the modes, the conffiles, the units
//! (`systemd-analyze verify`), the running service (started by `Type=notify`, as the rustploy
//! user, with its sandbox in force), its managed Caddy on :80, `doctor` on the host's engine,
//! the setup link, and the agent's unit reporting the host online once configured. Then an
//! upgrade keeps the owner and the settings, and a purge keeps the data.
//!
//! The container shares nothing with the host but the Docker engine's socket (so the service
//! reaches a real engine) and read-only mounts of the package and the scripts; its ports are
//! its own. systemd sets up the units' mount namespaces with CAP_SYS_ADMIN, which the container
//! gets for that.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustploy_e2e::{Outcome, poll, run_within, workspace};

use crate::deploying::rand_u32;

/// A Debian 12 root with systemd, as a fresh server has it; its init is systemd.
const SYSTEMD_IMAGE: &str = "rustploy-test/systemd:1";
const DASHBOARD: &str = "rustploy.example.test";
const CONFIG: &str = "/etc/rustploy/rustploy.toml";

fn docker(args: &[&str], timeout: Duration) -> Outcome {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run_within(cmd, timeout)
}

/// Builds the systemd image on the Debian base unless it exists.
fn systemd_image() {
    if docker(
        &["image", "inspect", SYSTEMD_IMAGE],
        Duration::from_secs(30),
    )
    .status
    .success()
    {
        return;
    }
    let mut base = Command::new(workspace().join("scripts/debian-base"));
    base.current_dir(workspace());
    let base = run_within(base, Duration::from_secs(900));
    base.assert_success("scripts/debian-base");
    let dockerfile = format!(
        "FROM {}\n\
         RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd \
         >/dev/null && rm -f /usr/sbin/policy-rc.d && rm -rf /var/lib/apt/lists/*\n\
         STOPSIGNAL SIGRTMIN+3\n\
         CMD [\"/lib/systemd/systemd\"]\n",
        base.stdout.trim()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    docker(
        &[
            "build",
            "--pull=false",
            "--quiet",
            "--tag",
            SYSTEMD_IMAGE,
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(600),
    )
    .assert_success("building the systemd image");
}

/// A container booted with systemd; removed when dropped.
struct Host {
    name: String,
}

impl Host {
    fn boot(package_dir: &Path) -> Self {
        let name = format!("rp-install-{}-{}", std::process::id(), rand_u32());
        let host = Host { name };
        let socket = Path::new("/var/run/docker.sock");
        let scripts = workspace().join("scripts");
        let mounts = [
            "/sys/fs/cgroup:/sys/fs/cgroup:ro".to_string(),
            format!("{}:/run/docker.sock", socket.display()),
            format!("{}:/pkg:ro", package_dir.display()),
            format!("{}:/src/scripts:ro", scripts.display()),
        ];
        let mut args = vec![
            "run",
            "--detach",
            "--name",
            &host.name,
            "--hostname",
            "rustploy-host",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
        ];
        for m in &mounts {
            args.extend(["--volume", m]);
        }
        args.push(SYSTEMD_IMAGE);
        docker(&args, Duration::from_secs(60)).assert_success("starting the systemd container");
        // Docker mounts /proc/sys read-only; a host's is writable by root. The kernel settings
        // of the container's own network namespace are its own, so the host's are untouched.
        docker(
            &["exec", &host.name, "mount", "-o", "remount,rw", "/proc/sys"],
            Duration::from_secs(30),
        )
        .assert_success("making the container's /proc/sys writable");
        poll(
            "systemd to finish booting",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let out = host.sh("systemctl is-system-running");
                match out.stdout.trim() {
                    "running" | "degraded" => Ok(()),
                    other => Err(other.to_string()),
                }
            },
        );
        host
    }

    /// Runs `script` with bash as root inside the container.
    fn sh_within(&self, script: &str, timeout: Duration) -> Outcome {
        docker(&["exec", &self.name, "bash", "-c", script], timeout)
    }

    fn sh(&self, script: &str) -> Outcome {
        self.sh_within(script, Duration::from_secs(60))
    }

    /// Runs `script` and returns its standard output, failing the test when it fails.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        out.assert_success(script);
        out.stdout
    }

    /// One `systemctl show` property of the server's unit.
    fn unit(&self, property: &str) -> String {
        self.ok(&format!(
            "systemctl show --value -p {property} rustploy-server.service"
        ))
        .trim()
        .to_string()
    }

    /// An HTTP/1.0 request to a port inside the container, answered as raw text (the fresh
    /// system has no curl; bash's /dev/tcp does).
    fn http(&self, port: u16, path: &str, host: &str) -> String {
        self.ok(&format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; \
             printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' >&3; timeout 10 cat <&3"
        ))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.name], Duration::from_secs(60));
    }
}

/// `scripts/package` on the debug binaries the suite has built: the same package as a release
/// one, only with larger binaries.
fn build_package(out: &Path) -> String {
    let mut cmd = Command::new(workspace().join("scripts/package"));
    cmd.current_dir(workspace())
        .args(["--profile", "dev", "--no-build", "--out"])
        .arg(out);
    let built = run_within(cmd, Duration::from_secs(300));
    built.assert_success("scripts/package");
    let deb = PathBuf::from(built.stdout.trim());
    assert!(deb.is_file(), "scripts/package printed {}", built.stdout);
    deb.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn the_package_installs_as_a_hardened_service_upgrades_and_purges_keeping_the_data() {
    systemd_image();
    let packages = tempfile::tempdir().unwrap();
    let deb = build_package(packages.path());
    let contents = run_within(
        {
            let mut c = Command::new("dpkg-deb");
            c.arg("--contents").arg(packages.path().join(&deb));
            c
        },
        Duration::from_secs(60),
    );
    for path in [
        "./usr/bin/rustploy-server",
        "./usr/bin/rustploy-agent",
        "./usr/bin/rustploy-tui",
        "./lib/systemd/system/rustploy-server.service",
        "./lib/systemd/system/rustploy-agent.service",
        "./etc/rustploy/rustploy.toml",
        "./usr/lib/sysctl.d/60-rustploy.conf",
    ] {
        assert!(
            contents.stdout.contains(path),
            "{path} is not in the package:\n{}",
            contents.stdout
        );
    }

    let host = Host::boot(packages.path());
    // The host's engine answers on the mounted socket; the container's own Docker services,
    // which the docker.io package brings, stay off. The group gets the socket's group id, as
    // on a host where the engine runs itself.
    let socket_gid = std::fs::metadata("/var/run/docker.sock")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .expect("the Docker engine's socket");
    host.ok(&format!(
        "systemctl mask docker.service docker.socket containerd.service && \
         groupadd --system --non-unique --gid {socket_gid} docker"
    ));

    // --- installing -------------------------------------------------------------------------
    let install = host.sh_within(
        &format!("/src/scripts/install --deb /pkg/{deb} --dashboard-domain {DASHBOARD}"),
        Duration::from_secs(900),
    );
    install.assert_success("scripts/install");
    let said = format!("{}{}", install.stdout, install.stderr);
    assert!(
        said.contains("Rustploy is installed. Create its owner"),
        "the package's installation prints the setup link:\n{said}"
    );
    assert!(
        said.contains(&format!("https://{DASHBOARD}/setup?token=")),
        "the last link names the dashboard's domain:\n{said}"
    );
    assert!(
        said.contains("stopping and disabling caddy.service"),
        "Debian's own Caddy gives :80 and :443 to the managed one:\n{said}"
    );
    // The kernel setting that keeps Caddy's loads from resetting connections, applied in the
    // host's network namespace (here the container's own, whose /proc/sys `boot` made
    // writable, as on a real host).
    assert_eq!(
        host.ok("cat /proc/sys/net/ipv4/tcp_migrate_req").trim(),
        "1",
        "postinst applies /usr/lib/sysctl.d/60-rustploy.conf:\n{said}"
    );
    assert!(
        !said.contains("could not set net.ipv4.tcp_migrate_req")
            && said.lines().any(|l| l.starts_with("ok    reloads")),
        "doctor sees the setting the package applied:\n{said}"
    );
    for check in [
        "docker",
        "compose",
        "caddy",
        "data dir",
        "ledger",
        "secret key",
    ] {
        assert!(
            said.lines()
                .any(|l| l.starts_with("ok ") && l[6..].starts_with(check)),
            "doctor's '{check}' check passes on the installed system:\n{said}"
        );
    }

    // The files, the user and the modes.
    let modes = host.ok(
        "stat -c '%a %U %G %n' /var/lib/rustploy /etc/rustploy /etc/rustploy/rustploy.toml \
         /etc/rustploy/agent.toml /usr/bin/rustploy-server /usr/bin/rustploy-agent \
         /usr/bin/rustploy-tui /var/lib/rustploy/rustploy.db /var/lib/rustploy/secret.key",
    );
    for expected in [
        "700 rustploy rustploy /var/lib/rustploy\n",
        "755 root root /etc/rustploy\n",
        "640 root rustploy /etc/rustploy/rustploy.toml\n",
        "600 root root /etc/rustploy/agent.toml\n",
        "755 root root /usr/bin/rustploy-server\n",
        "755 root root /usr/bin/rustploy-agent\n",
        "755 root root /usr/bin/rustploy-tui\n",
        "600 rustploy rustploy /var/lib/rustploy/rustploy.db\n",
        "600 rustploy rustploy /var/lib/rustploy/secret.key\n",
    ] {
        assert!(
            modes.contains(expected),
            "expected {expected:?} in:\n{modes}"
        );
    }
    let user = host.ok("getent passwd rustploy; id -nG rustploy");
    assert!(
        user.contains(":/var/lib/rustploy:/usr/sbin/nologin"),
        "a system user at home in its data dir, with no shell: {user}"
    );
    let groups: Vec<&str> = user.lines().nth(1).unwrap().split(' ').collect();
    assert!(
        groups.contains(&"rustploy") && groups.contains(&"docker"),
        "{user}"
    );
    let conffiles = host.ok("dpkg-query -W -f='${Conffiles}' rustploy");
    assert!(
        conffiles.contains("/etc/rustploy/rustploy.toml"),
        "{conffiles}"
    );
    assert!(
        conffiles.contains("/etc/rustploy/agent.toml"),
        "{conffiles}"
    );
    let config = host.ok(&format!("cat {CONFIG}"));
    assert!(
        config.contains(&format!("dashboard_domain = \"{DASHBOARD}\"")),
        "scripts/install sets the dashboard's domain:\n{config}"
    );

    // The units.
    let verify = host.sh(
        "systemd-analyze verify /lib/systemd/system/rustploy-server.service \
         /lib/systemd/system/rustploy-agent.service",
    );
    verify.assert_success("systemd-analyze verify");
    assert!(
        !verify.stderr.contains("rustploy"),
        "systemd finds nothing to say about the units: {}",
        verify.stderr
    );
    assert_eq!(host.unit("Type"), "notify");
    assert_eq!(host.unit("ActiveState"), "active");
    assert_eq!(host.unit("SubState"), "running");
    assert_eq!(host.unit("NRestarts"), "0");
    assert_eq!(
        host.ok("systemctl is-enabled rustploy-server.service")
            .trim(),
        "enabled"
    );
    assert_eq!(
        host.sh("systemctl is-enabled rustploy-agent.service")
            .stdout
            .trim(),
        "disabled",
        "the agent waits for its server and token"
    );

    // The running server: its user, capabilities and file system as its unit says.
    let pid = host.unit("MainPID");
    let status = host.ok(&format!("cat /proc/{pid}/status"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
            .trim()
            .to_string()
    };
    let uid = host.ok("id -u rustploy").trim().to_string();
    assert!(field("Uid").starts_with(&format!("{uid}\t")), "{status}");
    // CAP_NET_BIND_SERVICE (bit 10) and nothing else, ever.
    assert_eq!(field("CapBnd"), "0000000000000400");
    assert_eq!(field("CapAmb"), "0000000000000400");
    assert_eq!(field("NoNewPrivs"), "1");
    // The unit's system call filter is in force (mode 2: a seccomp filter).
    assert_eq!(field("Seccomp"), "2", "{status}");
    let mounts = host.ok(&format!("awk '{{print $5, $6}}' /proc/{pid}/mountinfo"));
    let option_of = |point: &str| {
        mounts
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(p, _)| *p == point)
            .map(|(_, o)| o.to_string())
            .next_back()
            .unwrap_or_else(|| panic!("{point} is not mounted for the server:\n{mounts}"))
    };
    assert!(option_of("/").starts_with("ro"), "{mounts}");
    assert!(option_of("/home").starts_with("ro"), "{mounts}");
    assert!(option_of("/var/lib/rustploy").starts_with("rw"), "{mounts}");
    assert!(
        option_of("/tmp").starts_with("rw"),
        "a private /tmp: {mounts}"
    );

    // The managed Caddy: the server's child, as rustploy, on :80, sending the dashboard's
    // host to HTTPS.
    let caddy = host.ok("for p in /proc/[0-9]*; do \
           if tr '\\0' ' ' <$p/cmdline 2>/dev/null | grep -q '^/usr/bin/caddy run'; then \
             echo \"$(stat -c %U $p) $(awk '/^PPid/ {print $2}' $p/status)\"; fi; done");
    assert_eq!(caddy.trim(), format!("rustploy {pid}"), "{caddy}");
    let health = host.http(8080, "/healthz", "127.0.0.1");
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");
    let redirect = host.http(80, "/", DASHBOARD);
    assert!(
        redirect.starts_with("HTTP/1.0 308")
            && redirect.contains(&format!("Location: https://{DASHBOARD}/")),
        "{redirect}"
    );

    // The agent, once its settings name the server and a token, registers this host and
    // reports it online, running under its own unit's sandbox.
    let server = |args: &str| {
        host.ok(&format!(
            "runuser -u rustploy -- rustploy-server --config {CONFIG} {args} 2>/dev/null"
        ))
        .trim()
        .to_string()
    };
    let agent_token = server("admin create-token --name this-host --scopes agent");
    let reader = server("admin create-token --name reader --scopes read");
    host.ok(&format!(
        "printf 'server = \"http://127.0.0.1:8080\"\ntoken = \"{agent_token}\"\n\
         interval_secs = 1\n' >/etc/rustploy/agent.toml && \
         systemctl enable --now rustploy-agent.service"
    ));
    poll(
        "the agent to report this host online",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let answer = host.ok(&format!(
                "exec 3<>/dev/tcp/127.0.0.1/8080; printf 'GET /api/v1/agents HTTP/1.0\r\n\
                 Authorization: Bearer {reader}\r\n\r\n' >&3; timeout 10 cat <&3"
            ));
            if answer.contains("\"online\"") && answer.contains("rustploy-host") {
                Ok(())
            } else {
                Err(answer)
            }
        },
    );
    assert_eq!(
        host.ok("systemctl show --value -p NRestarts rustploy-agent.service")
            .trim(),
        "0"
    );

    // --- upgrading --------------------------------------------------------------------------
    host.ok(&format!(
        "echo 'a-long-enough-password-1' | runuser -u rustploy -- rustploy-server --config \
         {CONFIG} admin create-user --email owner@example.test --role owner --password-stdin"
    ));
    let upgrade = host.sh_within(
        // A host whose kernel settings cannot be written (as in most containers): the
        // upgrade goes on and says what it could not do.
        &format!(
            "mount -o remount,ro /proc/sys && \
             DEBIAN_FRONTEND=noninteractive apt-get install --reinstall -y /pkg/{deb}"
        ),
        Duration::from_secs(600),
    );
    upgrade.assert_success("reinstalling the package");
    let said = format!("{}{}", upgrade.stdout, upgrade.stderr);
    assert!(
        !said.contains("setup?token="),
        "no setup link once an owner exists:\n{said}"
    );
    assert!(
        said.contains("rustploy: could not set net.ipv4.tcp_migrate_req=1 here"),
        "a kernel setting that cannot be written is said:\n{said}"
    );
    assert_eq!(host.unit("ActiveState"), "active");
    assert_ne!(
        host.unit("MainPID"),
        pid,
        "the upgrade restarted the server"
    );
    let config = host.ok(&format!("cat {CONFIG}"));
    assert!(
        config.contains(&format!("dashboard_domain = \"{DASHBOARD}\"")),
        "the settings survive the upgrade:\n{config}"
    );
    let link = host.sh(&format!(
        "runuser -u rustploy -- rustploy-server --config {CONFIG} admin setup-link"
    ));
    assert!(!link.status.success());
    assert!(
        link.stderr.contains("a user exists already"),
        "the owner survived: {}",
        link.stderr
    );
    let health = host.http(8080, "/healthz", "127.0.0.1");
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");

    // --- purging ----------------------------------------------------------------------------
    let purge = host.sh_within(
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y rustploy",
        Duration::from_secs(300),
    );
    purge.assert_success("purging the package");
    assert!(
        format!("{}{}", purge.stdout, purge.stderr).contains("kept /var/lib/rustploy"),
        "{}",
        purge.stdout
    );
    assert_ne!(
        host.sh("systemctl is-active rustploy-server.service")
            .stdout
            .trim(),
        "active"
    );
    host.ok(
        "test ! -e /lib/systemd/system/rustploy-server.service && test ! -e /usr/bin/rustploy-server \
         && test ! -e /etc/rustploy/rustploy.toml && test -s /var/lib/rustploy/rustploy.db \
         && test -s /var/lib/rustploy/secret.key",
    );
    let caddy = host.ok(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null | grep -q '^/usr/bin/caddy run' && echo $p; done; true",
    );
    assert_eq!(caddy.trim(), "", "the managed Caddy went with the server");
}

#[test]
fn the_install_script_refuses_a_domain_that_is_not_a_host_name_before_changing_anything() {
    // Runs on this machine: the refusal comes before apt or anything else is touched.
    for bad in [
        "x\"; rm -rf /",
        "a b.example.com",
        "-rf",
        "exa$(id)mple.com",
        "example.com\nlisten = \"0.0.0.0:1\"",
    ] {
        let mut cmd = Command::new(workspace().join("scripts/install"));
        cmd.args(["--deb", "/nonexistent.deb", "--dashboard-domain", bad]);
        let out = run_within(cmd, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("is not a host name"),
            "{bad:?}: {}",
            out.stderr
        );
    }
    let mut cmd = Command::new(workspace().join("scripts/install"));
    cmd.args(["--no-such-flag"]);
    let out = run_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("unknown argument"), "{}", out.stderr);

    let mut cmd = Command::new(workspace().join("scripts/package"));
    cmd.args(["--profile", "fastest"]);
    let out = run_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("release or dev"), "{}", out.stderr);
}
