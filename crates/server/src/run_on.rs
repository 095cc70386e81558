//! Commands run on a path's events: `[path_defaults.run_on]` / `[paths."NAME".run_on]`
//! `publish`, `unpublish`, `read`, `unread` (docs/events.md).
//!
//! One consumer of the event bus (its own bounded queue: media never waits for it) starts each
//! command with `sh -c`, in a process group of its own, with the event in its environment
//! (`SLUICE_EVENT`, `SLUICE_PATH`, `SLUICE_SESSION`, `SLUICE_PROTOCOL`, `SLUICE_REMOTE` and the
//! path's URLs on this server, `SLUICE_RTMP_URL` ...; inherited `SLUICE_*` variables are
//! removed, so configuration secrets passed that way do not leak into commands).
//!
//! - `publish` runs while the path is published: started on `published`, stopped on
//!   `unpublished` / `path_ended` and at shutdown — SIGTERM to its process group, SIGKILL
//!   [`KILL_GRACE`] later. With `publish_restart`, a command that exits while the path is still
//!   published is started again after a backoff (1 s, doubling to 30 s; back to 1 s after a
//!   run of 30 s or more).
//! - `unpublish`, `read`, `unread` run once per event, to completion (terminated only at
//!   shutdown); at most [`MAX_ONCE`] at a time, more are skipped with a warning.
//!
//! Each line a command writes (stdout and stderr) goes to the log at info level with the path
//! and the hook, cut at [`MAX_LINE`] bytes, control characters replaced, at most
//! [`MAX_LINES`] lines per 10 s per stream (the rest counted). A lost bus event (the queue
//! overflowed) makes the supervisor reconcile the `publish` commands with the live paths.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_media::events::{Received, ServerEvent};
use sluice_media::stats::Role;
use sluice_media::Registry;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PathRunOn};

/// Between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(3);
/// Run-once commands running at once, at most.
pub const MAX_ONCE: usize = 64;
/// Longest line of a command's output that is logged (bytes; the rest of the line is cut).
pub const MAX_LINE: usize = 1024;
/// Lines logged per output stream per [`LINE_WINDOW`].
pub const MAX_LINES: u32 = 50;
const LINE_WINDOW: Duration = Duration::from_secs(10);
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A `publish` command that ran this long restarts after [`RESTART_MIN`] again.
const RESTART_RESET: Duration = Duration::from_secs(30);

/// The commands of a path, or `None` when no configuration matches it. Called on each event,
/// so a configuration reload takes effect at the next event.
pub type Resolver = Arc<dyn Fn(&str) -> Option<PathRunOn> + Send + Sync>;

/// The base addresses of this server's listeners, as a local command reaches them.
#[derive(Debug, Clone, Default)]
pub struct Urls {
    rtmp: Option<String>,
    srt: Option<String>,
    http: Option<String>,
    webrtc: Option<String>,
}

impl Urls {
    pub fn from_config(c: &Config) -> Urls {
        let on = |enabled: bool, addr: SocketAddr| enabled.then(|| local(addr));
        Urls {
            rtmp: on(c.rtmp.enabled, c.rtmp.listen),
            srt: on(c.srt.enabled, c.srt.listen),
            http: on(c.http.enabled, c.http.listen),
            webrtc: on(c.webrtc.enabled, c.webrtc.listen),
        }
    }

    /// The `SLUICE_*_URL` variables of `path`.
    fn env(&self, path: &str) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(h) = &self.rtmp {
            v.push(("SLUICE_RTMP_URL", format!("rtmp://{h}/{path}")));
        }
        if let Some(h) = &self.srt {
            v.push(("SLUICE_SRT_URL", format!("srt://{h}?streamid=read:{path}")));
        }
        if let Some(h) = &self.http {
            v.push(("SLUICE_HLS_URL", format!("http://{h}/{path}/index.m3u8")));
            v.push(("SLUICE_FLV_URL", format!("http://{h}/{path}.flv")));
        }
        if let Some(h) = &self.webrtc {
            v.push(("SLUICE_WHEP_URL", format!("http://{h}/{path}/whep")));
        }
        v
    }
}

/// `host:port` for a local client: an unspecified listen address becomes the loopback one.
fn local(addr: SocketAddr) -> String {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a.to_string()
}

/// One command to run, with its environment.
#[derive(Debug, Clone)]
struct Spec {
    hook: &'static str,
    command: String,
    path: String,
    env: Vec<(&'static str, String)>,
}

/// Starts the supervisor. The returned task ends after `stop`, once every command it started
/// has exited (each is terminated: SIGTERM, SIGKILL after [`KILL_GRACE`]).
pub fn spawn(
    resolve: Resolver,
    urls: Urls,
    registry: Registry,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // Subscribed now, so no event after start is missed.
    let rx = registry.events().subscribe("run_on", 4096);
    let sup = Supervisor {
        resolve,
        urls,
        registry,
        stop,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        publishers: HashMap::new(),
        once: Arc::default(),
    };
    tokio::spawn(sup.run(rx))
}

struct Running {
    session: u64,
    cancel: CancellationToken,
}

struct Supervisor {
    resolve: Resolver,
    urls: Urls,
    registry: Registry,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    /// The `publish` command of each path that has one running.
    running: HashMap<String, Running>,
    /// The publisher of each published path: (session, protocol).
    publishers: HashMap<String, (u64, &'static str)>,
    /// Run-once commands running.
    once: Arc<AtomicUsize>,
}

impl Supervisor {
    async fn run(mut self, mut rx: sluice_media::events::EventReceiver) {
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                r = rx.recv() => match r {
                    None => break,
                    Some(Received::Missed(n)) => {
                        tracing::warn!(missed = n, "run_on fell behind the events: reconciling with the live paths");
                        self.reconcile();
                    }
                    Some(Received::Event(e)) => self.on_event(e.event),
                },
            }
        }
        // Every command's token is a child of `stop`: they are all being terminated.
        for r in self.running.values() {
            r.cancel.cancel();
        }
        while self.tasks.join_next().await.is_some() {}
    }

    fn on_event(&mut self, event: ServerEvent) {
        match event {
            ServerEvent::Published {
                path,
                session,
                protocol,
            } => {
                self.publishers.insert(path.to_string(), (session, protocol));
                self.start_publish(&path, session, protocol);
            }
            ServerEvent::Unpublished { path, session } => {
                self.stop_publish(&path);
                let protocol = self.publishers.remove(&*path).map_or("", |(_, p)| p);
                if let Some(cfg) = (self.resolve)(&path) {
                    self.run_once("unpublish", cfg.unpublish, &path, session, protocol, Vec::new());
                }
            }
            ServerEvent::PathEnded { path } => {
                self.stop_publish(&path);
                self.publishers.remove(&*path);
            }
            ServerEvent::SessionOpened {
                id,
                protocol,
                role: Role::Reader,
                path,
                remote,
            } => {
                if let Some(cfg) = (self.resolve)(&path) {
                    let extra = remote_env(remote);
                    self.run_once("read", cfg.read, &path, id, protocol, extra);
                }
            }
            ServerEvent::SessionClosed {
                id,
                protocol,
                role: Role::Reader,
                path,
                reason,
            } => {
                if let Some(cfg) = (self.resolve)(&path) {
                    let extra = vec![("SLUICE_REASON", reason)];
                    self.run_once("unread", cfg.unread, &path, id, protocol, extra);
                }
            }
            ServerEvent::Recording {
                path,
                state: "completed",
                file,
                duration,
                ..
            } => {
                if let Some(cfg) = (self.resolve)(&path) {
                    let extra = vec![
                        ("SLUICE_SEGMENT_PATH", file),
                        ("SLUICE_SEGMENT_DURATION", format!("{duration:.3}")),
                    ];
                    self.run_once(
                        "record_segment_complete",
                        cfg.record_segment_complete,
                        &path,
                        0,
                        "",
                        extra,
                    );
                }
            }
            _ => {}
        }
    }

    /// After lost events: stop the commands of paths no longer published, start those of
    /// published paths that lack theirs.
    fn reconcile(&mut self) {
        let live: HashMap<String, (u64, &'static str)> = self
            .registry
            .paths()
            .into_iter()
            .filter_map(|p| p.publisher.map(|pub_| (p.name, pub_)))
            .collect();
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(path, r)| live.get(*path).is_none_or(|(s, _)| *s != r.session))
            .map(|(path, _)| path.clone())
            .collect();
        for path in gone {
            self.stop_publish(&path);
        }
        for (path, (session, protocol)) in &live {
            if !self.running.contains_key(path) {
                self.start_publish(path, *session, protocol);
            }
        }
        self.publishers = live;
    }

    fn base_env(
        &self,
        hook: &'static str,
        path: &str,
        session: u64,
        protocol: &str,
    ) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("SLUICE_EVENT", hook.to_owned()),
            ("SLUICE_PATH", path.to_owned()),
            ("SLUICE_SESSION", session.to_string()),
            ("SLUICE_PROTOCOL", protocol.to_owned()),
        ];
        env.extend(self.urls.env(path));
        env
    }

    fn start_publish(&mut self, path: &str, session: u64, protocol: &str) {
        self.stop_publish(path);
        let Some(cfg) = (self.resolve)(path) else {
            return;
        };
        if cfg.publish.trim().is_empty() || self.stop.is_cancelled() {
            return;
        }
        let spec = Spec {
            hook: "publish",
            command: cfg.publish,
            path: path.to_owned(),
            env: self.base_env("publish", path, session, protocol),
        };
        let cancel = self.stop.child_token();
        self.running.insert(
            path.to_owned(),
            Running {
                session,
                cancel: cancel.clone(),
            },
        );
        self.tasks.spawn(run_publish(spec, cfg.publish_restart, cancel));
    }

    fn stop_publish(&mut self, path: &str) {
        if let Some(r) = self.running.remove(path) {
            r.cancel.cancel();
        }
    }

    fn run_once(
        &mut self,
        hook: &'static str,
        command: String,
        path: &str,
        session: u64,
        protocol: &str,
        extra: Vec<(&'static str, String)>,
    ) {
        if command.trim().is_empty() || self.stop.is_cancelled() {
            return;
        }
        if self.once.fetch_add(1, Relaxed) >= MAX_ONCE {
            self.once.fetch_sub(1, Relaxed);
            tracing::warn!(
                path,
                hook,
                "run_on {hook} not run: {MAX_ONCE} run_on commands are running already"
            );
            return;
        }
        let mut env = self.base_env(hook, path, session, protocol);
        env.extend(extra);
        let spec = Spec {
            hook,
            command,
            path: path.to_owned(),
            env,
        };
        let cancel = self.stop.child_token();
        let once = self.once.clone();
        self.tasks.spawn(async move {
            let started = Instant::now();
            match run_command(&spec, &cancel).await {
                Ok(Some(status)) if status.success() => {
                    tracing::debug!(path = %spec.path, hook, "run_on {hook} finished in {:?}", started.elapsed())
                }
                Ok(Some(status)) => tracing::warn!(path = %spec.path, hook, "run_on {hook} failed: {status}"),
                Ok(None) => {}
                Err(e) => tracing::warn!(path = %spec.path, hook, "run_on {hook} could not start: {e}"),
            }
            once.fetch_sub(1, Relaxed);
        });
    }
}

fn remote_env(remote: Option<SocketAddr>) -> Vec<(&'static str, String)> {
    remote
        .map(|r| vec![("SLUICE_REMOTE", r.to_string())])
        .unwrap_or_default()
}

/// Runs a path's `publish` command until `cancel`, restarting it if asked.
async fn run_publish(spec: Spec, restart: bool, cancel: CancellationToken) {
    let mut backoff = RESTART_MIN;
    loop {
        let started = Instant::now();
        match run_command(&spec, &cancel).await {
            Ok(None) => return,
            Ok(Some(status)) => {
                tracing::info!(path = %spec.path, hook = spec.hook, "run_on publish exited: {status}")
            }
            Err(e) => {
                tracing::warn!(path = %spec.path, hook = spec.hook, "run_on publish could not start: {e}")
            }
        }
        if !restart {
            return;
        }
        if started.elapsed() >= RESTART_RESET {
            backoff = RESTART_MIN;
        }
        tracing::info!(path = %spec.path, hook = spec.hook, "run_on publish restarts in {backoff:?}");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_MAX);
    }
}

/// Runs `sh -c COMMAND` until it exits (`Some(status)`) or `cancel` (then terminates it and
/// returns `None`).
async fn run_command(spec: &Spec, cancel: &CancellationToken) -> std::io::Result<Option<ExitStatus>> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&spec.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLUICE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn()?;
    tracing::info!(path = %spec.path, hook = spec.hook, pid = child.id(), "run_on {} started: {}", spec.hook, spec.command);
    // The pumps live as long as this call: dropped (aborted) with the set.
    let mut pumps = JoinSet::new();
    let label: Arc<str> = spec.path.as_str().into();
    if let Some(out) = child.stdout.take() {
        pumps.spawn(pump(out, label.clone(), spec.hook));
    }
    if let Some(err) = child.stderr.take() {
        pumps.spawn(pump(err, label, spec.hook));
    }
    let status = tokio::select! {
        st = child.wait() => Some(st?),
        _ = cancel.cancelled() => None,
    };
    match status {
        Some(st) => {
            // Let the pumps log what is left in the pipes (a background child keeping them
            // open does not hold us up).
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while pumps.join_next().await.is_some() {}
            })
            .await;
            Ok(Some(st))
        }
        None => {
            terminate(&mut child, spec).await;
            Ok(None)
        }
    }
}

/// SIGTERM to the command's process group, SIGKILL after [`KILL_GRACE`].
async fn terminate(child: &mut tokio::process::Child, spec: &Spec) {
    let Some(pid) = child.id() else {
        return;
    };
    signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok() {
        // The shell is gone; what it left in its group gets the same end.
        signal_group(pid, libc::SIGKILL);
        tracing::info!(path = %spec.path, hook = spec.hook, pid, "run_on {} stopped", spec.hook);
        return;
    }
    tracing::warn!(path = %spec.path, hook = spec.hook, pid, "run_on {} ignored SIGTERM for {KILL_GRACE:?}: killed", spec.hook);
    signal_group(pid, libc::SIGKILL);
    let _ = child.wait().await;
}

/// Sends `signal` to the process group `pid` leads (the command was started in its own group).
#[allow(unsafe_code)]
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of this process. A negative pid
    // names a process group: the one the child was started as the leader of (process_group(0)).
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Logs a command's output line by line, bounded (see the module docs).
async fn pump(mut r: impl AsyncRead + Unpin, path: Arc<str>, hook: &'static str) {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut cut = false;
    let mut lines = LineBudget::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                lines.log(&path, hook, &line, cut);
                line.clear();
                cut = false;
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else {
                cut = true;
            }
        }
    }
    if !line.is_empty() {
        lines.log(&path, hook, &line, cut);
    }
    lines.flush(&path, hook);
}

/// At most [`MAX_LINES`] lines per [`LINE_WINDOW`]; the rest counted.
struct LineBudget {
    window: Instant,
    logged: u32,
    skipped: u64,
}

impl LineBudget {
    fn new() -> LineBudget {
        LineBudget {
            window: Instant::now(),
            logged: 0,
            skipped: 0,
        }
    }

    fn log(&mut self, path: &str, hook: &'static str, line: &[u8], cut: bool) {
        if self.window.elapsed() >= LINE_WINDOW {
            self.flush(path, hook);
            self.window = Instant::now();
            self.logged = 0;
        }
        if self.logged >= MAX_LINES {
            self.skipped += 1;
            return;
        }
        self.logged += 1;
        let text = clean(line);
        let more = if cut { " [...]" } else { "" };
        tracing::info!(path, hook, "run_on {hook}: {text}{more}");
    }

    fn flush(&mut self, path: &str, hook: &'static str) {
        if self.skipped > 0 {
            tracing::info!(
                path,
                hook,
                "run_on {hook}: {} more lines of output not logged",
                self.skipped
            );
            self.skipped = 0;
        }
    }
}

/// The line as text, control characters (escape sequences, carriage returns) replaced.
fn clean(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_point_at_the_local_listeners() {
        let mut c = Config::default();
        c.srt.enabled = false;
        let u = Urls::from_config(&c);
        let env: HashMap<_, _> = u.env("live/a").into_iter().collect();
        assert_eq!(env["SLUICE_RTMP_URL"], "rtmp://127.0.0.1:1935/live/a");
        assert_eq!(env["SLUICE_HLS_URL"], "http://127.0.0.1:8888/live/a/index.m3u8");
        assert_eq!(env["SLUICE_FLV_URL"], "http://127.0.0.1:8888/live/a.flv");
        assert_eq!(env["SLUICE_WHEP_URL"], "http://127.0.0.1:8889/live/a/whep");
        assert!(!env.contains_key("SLUICE_SRT_URL"));
        assert_eq!(local("[::]:1935".parse().unwrap()), "[::1]:1935");
        assert_eq!(local("10.0.0.2:1935".parse().unwrap()), "10.0.0.2:1935");
    }

    #[test]
    fn output_is_cleaned() {
        assert_eq!(clean(b"a\x1b[31mred\r"), "a\u{fffd}[31mred\u{fffd}");
    }

    fn spec(command: &str) -> Spec {
        Spec {
            hook: "publish",
            command: command.to_owned(),
            path: "t".to_owned(),
            env: vec![("SLUICE_PATH", "t".to_owned())],
        }
    }

    #[tokio::test]
    async fn a_command_gets_its_environment_and_its_status() {
        let dir = std::env::temp_dir().join(format!("sluice-run-on-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("env");
        let cmd = format!("echo \"$SLUICE_PATH\" > {}; exit 3", file.display());
        let st = run_command(&spec(&cmd), &CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.code(), Some(3));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "t\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn cancel_terminates_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("sluice-run-on-k-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pid");
        // A background grandchild, and a shell that waits for it.
        let cmd = format!("sleep 600 & echo $! > {}; wait", file.display());
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (s, c) = (spec(&cmd), cancel.clone());
            async move { run_command(&s, &c).await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "the command did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let t0 = Instant::now();
        cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Ok(None)));
        assert!(t0.elapsed() < KILL_GRACE, "SIGTERM was enough");
        // The grandchild is gone (or a zombie waiting for its new parent to reap it).
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(Instant::now() < deadline, "the grandchild {pid} survived: {stat}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_lines_are_cut_and_floods_counted() {
        let mut b = LineBudget::new();
        for _ in 0..(MAX_LINES + 5) {
            b.log("p", "publish", b"x", false);
        }
        assert_eq!((b.logged, b.skipped), (MAX_LINES, 5));
    }
}
