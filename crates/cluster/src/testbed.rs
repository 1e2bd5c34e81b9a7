//! A throwaway single-node Slurm: `munged`, `slurmctld` and `slurmd` started as root in a
//! directory of their own, for the end-to-end test and `cargo xtask bench-slurm`.
//!
//! Everything lives in that directory: the munge key and socket, `slurm.conf` (free ports,
//! `select/cons_tres`, `proctrack/linuxproc`, `task/none`, no accounting, no cgroups),
//! `gres.conf` with fake GPUs (character devices made with `mknod`, like `/dev/null`), the state
//! and spool directories and the logs. The daemons run in the foreground as children of this
//! process; dropping the [`LocalSlurm`] cancels every job and stops each daemon by its PID, so a
//! failing test still cleans up. Clients (`sbatch`, `squeue`, …) reach it through `SLURM_CONF`
//! ([`LocalSlurm::conf`]).
//!
//! Needs Debian's `slurm-wlm` and `munge` (or the same binaries) and root: [`unavailable`] says
//! why it cannot start here.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Why a local Slurm cannot be started on this machine, or `None` if it can.
pub fn unavailable() -> Option<String> {
    let missing: Vec<&str> = [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "sinfo",
        "scancel",
        "mknod",
    ]
    .into_iter()
    .filter(|program| find_program(program).is_none())
    .collect();
    if !missing.is_empty() {
        return Some(format!(
            "not installed: {} (Debian: apt-get install slurm-wlm munge)",
            missing.join(", ")
        ));
    }
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("the Slurm daemons need root (slurmd runs jobs as their user)".into());
    }
    None
}

/// `program` on `PATH` or in `/usr/sbin` and `/sbin` (where Debian puts the daemons).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The node's size as Slurm is told it (`config_overrides`: not checked against the hardware, so
/// more tasks than cores can run at once, e.g. tasks that wait on a GPU or sleep).
#[derive(Clone, Debug)]
pub struct Options {
    pub cpus: u32,
    /// Fake GPUs (`gres/gpu`), 0 for none.
    pub gpus: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options { cpus: 8, gpus: 4 }
    }
}

/// A running single-node Slurm; stops when dropped.
pub struct LocalSlurm {
    dir: PathBuf,
    conf: PathBuf,
    /// In start order; stopped in reverse.
    daemons: Vec<(&'static str, Child)>,
}

type Result<T> = std::result::Result<T, crate::Error>;

fn fail(message: impl Into<String>) -> crate::Error {
    crate::Error::Testbed(message.into())
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> crate::Error + '_ {
    move |e| fail(format!("{what}: {e}"))
}

/// A TCP port free on loopback right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("cannot find a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("cannot find a free port"))?
        .port())
}

/// This host's short name, as `slurmctld` compares it with `SlurmctldHost`.
fn short_hostname() -> Result<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map_err(io("cannot read the host name"))?;
    let short = raw.trim().split('.').next().unwrap_or("").to_owned();
    if short.is_empty() {
        return Err(fail("the host name is empty"));
    }
    Ok(short)
}

fn display(path: &Path) -> Result<&str> {
    let s = path
        .to_str()
        .ok_or_else(|| fail(format!("{} is not UTF-8", path.display())))?;
    if s.contains(char::is_whitespace) {
        return Err(fail(format!(
            "{s}: slurm.conf paths may not contain spaces"
        )));
    }
    Ok(s)
}

impl LocalSlurm {
    /// Writes the configuration into `dir` (created if needed), starts the daemons and waits until
    /// the node is idle.
    pub fn start(dir: &Path, options: &Options) -> Result<LocalSlurm> {
        if let Some(why) = unavailable() {
            return Err(fail(why));
        }
        fs::create_dir_all(dir).map_err(io("cannot create the Slurm directory"))?;
        let dir = dir
            .canonicalize()
            .map_err(io("cannot resolve the Slurm directory"))?;
        let d = display(&dir)?.to_owned();
        for sub in ["munge", "state", "spool", "log", "dev"] {
            fs::create_dir_all(dir.join(sub)).map_err(io("cannot create a directory"))?;
        }
        // munged wants its key private and its socket's directory searchable by everyone.
        fs::set_permissions(dir.join("munge"), fs::Permissions::from_mode(0o755))
            .map_err(io("chmod munge/"))?;
        let mut key = vec![0u8; 1024];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
            .map_err(io("cannot read /dev/urandom"))?;
        let key_path = dir.join("munge/munge.key");
        fs::write(&key_path, &key).map_err(io("cannot write the munge key"))?;
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
            .map_err(io("chmod munge.key"))?;

        let host = short_hostname()?;
        let (ctld_port, slurmd_port) = (free_port()?, free_port()?);
        let mut conf = format!(
            "\
ClusterName=scrbenchtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.socket
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
MinJobAge=10
KillWait=5
"
        );
        let mut node = format!(
            "NodeName={host} NodeAddr=127.0.0.1 CPUs={} RealMemory=1000",
            options.cpus
        );
        let mut gres = String::new();
        if options.gpus > 0 {
            conf.push_str("GresTypes=gpu\n");
            let _ = write!(node, " Gres=gpu:{}", options.gpus);
            for i in 0..options.gpus {
                let device = dir.join(format!("dev/gpu{i}"));
                let _ = fs::remove_file(&device);
                run(Command::new("mknod").arg(&device).args(["c", "1", "3"]))?;
                let _ = writeln!(gres, "NodeName={host} Name=gpu File={}", display(&device)?);
            }
        }
        let _ = writeln!(conf, "{node} State=UNKNOWN");
        let _ = writeln!(
            conf,
            "PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP"
        );
        let conf_path = dir.join("slurm.conf");
        fs::write(&conf_path, conf).map_err(io("cannot write slurm.conf"))?;
        fs::write(dir.join("gres.conf"), gres).map_err(io("cannot write gres.conf"))?;
        // No cgroups: proctrack/linuxproc and task/none; slurmd still reads the file.
        fs::write(dir.join("cgroup.conf"), "CgroupAutomount=no\n")
            .map_err(io("cannot write cgroup.conf"))?;

        let mut slurm = LocalSlurm {
            dir: dir.clone(),
            conf: conf_path,
            daemons: Vec::new(),
        };
        slurm.spawn(
            "munged",
            Command::new(find_program("munged").unwrap_or_else(|| "munged".into())).args([
                "--foreground".to_owned(),
                "--force".to_owned(),
                format!("--key-file={d}/munge/munge.key"),
                format!("--socket={d}/munge/munge.socket"),
                format!("--pid-file={d}/munge/munged.pid"),
                format!("--seed-file={d}/munge/munged.seed"),
                format!("--log-file={d}/log/munged.log"),
            ]),
        )?;
        slurm.wait_for(Duration::from_secs(10), "munged's socket", |s| {
            s.dir.join("munge/munge.socket").exists()
        })?;
        let ctld = find_program("slurmctld").unwrap_or_else(|| "slurmctld".into());
        slurm.spawn("slurmctld", Command::new(ctld).args(["-D", "-i"]))?;
        let slurmd = find_program("slurmd").unwrap_or_else(|| "slurmd".into());
        slurm.spawn("slurmd", Command::new(slurmd).args(["-D", "-N", &host]))?;
        slurm.wait_for(Duration::from_secs(30), "the node to be idle", |s| {
            s.node_state().is_some_and(|state| state == "idle")
        })?;
        Ok(slurm)
    }

    /// `slurm.conf`: set `SLURM_CONF` to it for `sbatch`, `squeue` and the like.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The directory holding the configuration, state and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client command (`squeue`, `sinfo`, …) pointed at this Slurm.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    fn spawn(&mut self, name: &'static str, command: &mut Command) -> Result<()> {
        let log = fs::File::create(self.dir.join(format!("log/{name}.out")))
            .map_err(io("cannot create a log file"))?;
        let err = log.try_clone().map_err(io("cannot create a log file"))?;
        let child = command
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| fail(format!("cannot start {name}: {e}")))?;
        self.daemons.push((name, child));
        Ok(())
    }

    /// Polls `ready` every 100 ms; fails with the daemons' logs if a daemon exits or time runs out.
    fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            let exited = self.daemons.iter_mut().find_map(|(name, child)| {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|status| (*name, status))
            });
            if let Some((name, status)) = exited {
                return Err(fail(format!(
                    "{name} exited ({status}) while waiting for {what}\n{}",
                    self.logs()
                )));
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "timed out waiting for {what}\n{}",
                    self.logs()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node's state as `sinfo` prints it (`idle`, `mixed`, `allocated`, …).
    pub fn node_state(&self) -> Option<String> {
        let output = self
            .command("sinfo")
            .args(["-h", "-o", "%T"])
            .output()
            .ok()?;
        let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.success() && !state.is_empty()).then_some(state)
    }

    /// The jobs in the queue (pending, running or completing), one `squeue` line each.
    pub fn queue(&self) -> Result<Vec<String>> {
        let output = self
            .command("squeue")
            .args(["-h", "-o", "%i %j %T %r"])
            .output()
            .map_err(io("cannot run squeue"))?;
        if !output.status.success() {
            return Err(fail(format!(
                "squeue failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Waits until the queue is empty (every job finished, failed or was cancelled).
    pub fn wait_queue_empty(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let queue = self.queue()?;
            if queue.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "jobs still queued after {timeout:?}:\n{}\n{}",
                    queue.join("\n"),
                    self.logs()
                )));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of each daemon's log, for error messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        let Ok(entries) = fs::read_dir(self.dir.join("log")) else {
            return text;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let content = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            let _ = writeln!(text, "== {}\n{}", path.display(), tail.join("\n"));
        }
        text
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        // Cancel what is still queued so that no job step outlives the daemons.
        if self.queue().is_ok_and(|q| !q.is_empty()) {
            let _ = self.command("scancel").args(["--user", "root"]).status();
            let _ = self.wait_queue_empty(Duration::from_secs(15));
        }
        while let Some((name, mut child)) = self.daemons.pop() {
            let pid = child.id().to_string();
            let _ = Command::new("kill")
                .args(["-TERM", &pid])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("{name} (pid {pid}) did not stop on SIGTERM; killing it");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Runs a setup command; its failure is an error with its stderr.
fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .map_err(|e| fail(format!("cannot run {command:?}: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
