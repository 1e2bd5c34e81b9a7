//! Running a study on a Slurm cluster: an array job whose task `i` runs shard `i/N` of the study
//! against the shared cache, and a report job that runs once every task succeeded.
//!
//! Everything here that decides what a script says is a pure function of a [`Plan`], so the
//! scripts are unit-tested and snapshot-tested; [`sbatch`] is the only function that runs
//! anything. [`testbed`] starts a throwaway single-node Slurm for tests and benchmarks.
//!
//! Two places in a script receive user strings, and each has its own rule:
//!
//! - **The shell body** (the scrbench command line: binary, config, cache and report paths,
//!   model names, prompt ids): every such string goes through [`shell_quote`], which single-quotes
//!   it (`'` becomes `'\''`), so quotes, `$()`, backticks, globs and newlines arrive as literal
//!   bytes of one argument. NUL, which no argument can hold, is rejected.
//! - **`#SBATCH` lines**, which `sbatch` reads itself (not the shell) and which end at a newline:
//!   values (partition, account, time, extra options) may not contain control characters, so no
//!   value can start a new line; the job name is reduced to `[A-Za-z0-9._-]`. Paths never appear
//!   in `#SBATCH` lines: `sbatch` runs in the run directory, and logs are named relative to it.

pub mod testbed;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// A script or submission that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} contains a NUL byte, which no shell argument can hold")]
    Nul { what: String },
    #[error("{what} `{value}` contains a control character (a newline would start a new line)")]
    Control { what: String, value: String },
    #[error("{what} is empty")]
    Empty { what: String },
    #[error("extra sbatch option `{0}` must be an option such as `--mem=32G`")]
    NotAnOption(String),
    #[error("{0}")]
    Plan(String),
    #[error("local Slurm: {0}")]
    Testbed(String),
    #[error("cannot run `sbatch`: {0} (is Slurm installed and SLURM_CONF set?)")]
    Spawn(std::io::Error),
    #[error("sbatch failed ({status}): {stderr}")]
    Sbatch { status: String, stderr: String },
    #[error("sbatch printed `{0}`, not a job id")]
    JobId(String),
}

/// Quotes `s` as one POSIX shell word: `'…'`, with each `'` written as `'\''`. Rejects NUL.
///
/// The result is safe anywhere a word is expected, in `sh`, `dash` and `bash`: inside single
/// quotes nothing is special, newlines included.
pub fn shell_quote(s: &str) -> Result<String, Error> {
    if s.contains('\0') {
        return Err(Error::Nul {
            what: format!("`{}`", s.replace('\0', "\\0")),
        });
    }
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('\'');
    for c in s.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    Ok(quoted)
}

/// What an array task runs and what both jobs ask Slurm for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Names both jobs (`scrbench-<study>`, `scrbench-<study>-report`) after [`job_name`].
    pub study: String,
    /// The scrbench binary and its global options (`--config`, `--cache`, `--reports`), one
    /// argument each, unquoted.
    pub program: Vec<String>,
    /// Options after `run` besides the shard (the selection: `--model=…`, `--prompts=…`, …).
    pub run_args: Vec<String>,
    /// N: the study is split into shards `0/N … N-1/N`.
    pub shards: usize,
    /// The shards submitted as array tasks (those with work), ascending.
    pub tasks: Vec<usize>,
    pub resources: Resources,
}

/// Slurm resources and options, from the command line and the study's `slurm:` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub gpus_per_task: Option<u32>,
    pub partition: Option<String>,
    pub time: Option<String>,
    pub account: Option<String>,
    /// More sbatch options, one `#SBATCH` line each, in both scripts.
    pub extra: Vec<String>,
}

/// The array task's log file, relative to the run directory (`%a`: the task index).
pub const TASK_LOG: &str = "task-%a.log";
/// The report job's log file, relative to the run directory.
pub const REPORT_LOG: &str = "report.log";
/// File names of the scripts in the run directory.
pub const ARRAY_SCRIPT: &str = "array.sh";
pub const REPORT_SCRIPT: &str = "report.sh";

/// `scrbench-<study>` with every character outside `[A-Za-z0-9._-]` replaced by `_`.
pub fn job_name(study: &str) -> String {
    let name: String = study
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("scrbench-{name}")
}

/// `0-3`, `0,2-3`: Slurm's `--array` list of `tasks` (ascending, distinct).
pub fn array_spec(tasks: &[usize]) -> String {
    let mut spec = String::new();
    let mut i = 0;
    while i < tasks.len() {
        let start = tasks[i];
        let mut end = start;
        while i + 1 < tasks.len() && tasks[i + 1] == end + 1 {
            i += 1;
            end = tasks[i];
        }
        if !spec.is_empty() {
            spec.push(',');
        }
        if end == start {
            let _ = write!(spec, "{start}");
        } else {
            let _ = write!(spec, "{start}-{end}");
        }
        i += 1;
    }
    spec
}

/// A value for an `#SBATCH` line: non-empty, no control characters.
fn directive_value(what: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::Empty { what: what.into() });
    }
    if value.contains('\0') {
        return Err(Error::Nul { what: what.into() });
    }
    if value.chars().any(char::is_control) {
        return Err(Error::Control {
            what: what.into(),
            value: value.escape_debug().to_string(),
        });
    }
    Ok(())
}

impl Plan {
    fn check(&self) -> Result<(), Error> {
        if self.shards == 0 {
            return Err(Error::Plan("the array needs at least one task".into()));
        }
        if self.tasks.is_empty() {
            return Err(Error::Plan("no array task to submit".into()));
        }
        if self.tasks.windows(2).any(|w| w[0] >= w[1])
            || self.tasks.iter().any(|&t| t >= self.shards)
        {
            return Err(Error::Plan(format!(
                "array tasks {:?} must be ascending and below {}",
                self.tasks, self.shards
            )));
        }
        if self.program.is_empty() {
            return Err(Error::Plan("no program to run".into()));
        }
        Ok(())
    }

    /// The `#SBATCH` lines both jobs share (partition, time, account, extra options).
    fn common_directives(&self, out: &mut String) -> Result<(), Error> {
        let r = &self.resources;
        for (what, value) in [
            ("partition", &r.partition),
            ("time", &r.time),
            ("account", &r.account),
        ] {
            if let Some(value) = value {
                directive_value(what, value)?;
                let _ = writeln!(out, "#SBATCH --{what}={value}");
            }
        }
        for extra in &r.extra {
            directive_value("extra sbatch option", extra)?;
            if !extra.starts_with('-') {
                return Err(Error::NotAnOption(extra.clone()));
            }
            let _ = writeln!(out, "#SBATCH {extra}");
        }
        Ok(())
    }

    /// The scrbench command line, every argument quoted, then `more` (already shell syntax).
    fn command(&self, more: &[&str]) -> Result<String, Error> {
        let mut words = self
            .program
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Result<Vec<_>, _>>()?;
        words.extend(more.iter().map(|s| (*s).to_owned()));
        for arg in &self.run_args {
            words.push(shell_quote(arg)?);
        }
        Ok(words.join(" "))
    }

    /// The array job: task `i` runs `scrbench … run --shard i/N …` and logs to `task-<i>.log`.
    ///
    /// Exit status 2 of a task (some items failed: recorded in the cache, shown by `status` and
    /// the report, retried on resubmission) counts as success, so the report job still runs; any
    /// other failure (an error, a task killed at its time limit) fails the task, and then the
    /// report job is cancelled.
    pub fn array_script(&self) -> Result<String, Error> {
        self.check()?;
        let n = self.shards;
        let mut s = String::from("#!/bin/bash\n");
        let _ = writeln!(s, "#SBATCH --job-name={}", job_name(&self.study));
        let _ = writeln!(s, "#SBATCH --array={}", array_spec(&self.tasks));
        s.push_str("#SBATCH --ntasks=1\n");
        let _ = writeln!(s, "#SBATCH --output={TASK_LOG}");
        if let Some(gpus) = self.resources.gpus_per_task {
            let _ = writeln!(s, "#SBATCH --gpus-per-task={gpus}");
        }
        self.common_directives(&mut s)?;
        let command =
            self.command(&["run", &format!("--shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"")])?;
        let _ = write!(
            s,
            "\
# Generated by scrbench: shard ${{SLURM_ARRAY_TASK_ID}}/{n} of the study, over the shared cache.
# Exit status 2 (some items failed; they are in the cache and retried next time) counts as
# success so that the report job runs; anything else fails the task and cancels the report.
set -u
echo \"scrbench: task ${{SLURM_ARRAY_TASK_ID}}/{n} of job ${{SLURM_ARRAY_JOB_ID:-?}} on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)\"
echo \"CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}\"
{command}
status=$?
echo \"scrbench: task ${{SLURM_ARRAY_TASK_ID}}/{n} exited with status $status at $(date -u +%Y-%m-%dT%H:%M:%SZ)\"
if [ \"$status\" -eq 2 ]; then exit 0; fi
exit \"$status\"
"
        );
        Ok(s)
    }

    /// The report job: `scrbench … report` (reads the cache, computes nothing, needs no GPU).
    pub fn report_script(&self) -> Result<String, Error> {
        self.check()?;
        let mut s = String::from("#!/bin/bash\n");
        let _ = writeln!(s, "#SBATCH --job-name={}-report", job_name(&self.study));
        s.push_str("#SBATCH --ntasks=1\n");
        let _ = writeln!(s, "#SBATCH --output={REPORT_LOG}");
        self.common_directives(&mut s)?;
        let words = self
            .program
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Result<Vec<_>, _>>()?;
        let _ = write!(
            s,
            "\
# Generated by scrbench: rebuilds the report from the shared cache once every array task succeeded.
set -u
{} report
",
            words.join(" ")
        );
        Ok(s)
    }
}

/// The `sbatch` arguments that submit the report script after `array_job` succeeded.
pub fn report_dependency(array_job: &str) -> [String; 2] {
    [
        format!("--dependency=afterok:{array_job}"),
        // A failed array task makes `afterok` unsatisfiable: cancel the report job instead of
        // leaving it pending forever.
        "--kill-on-invalid-dep=yes".to_owned(),
    ]
}

/// The job id in `sbatch --parsable` output: `<id>` or `<id>;<cluster>`.
pub fn parse_job_id(stdout: &str) -> Result<String, Error> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let id = line.split(';').next().unwrap_or("").trim();
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.to_owned())
    } else {
        Err(Error::JobId(stdout.trim().to_owned()))
    }
}

/// Runs `sbatch --parsable <args> <script>` in `dir` (so relative log names land there) and
/// returns the job id.
pub fn sbatch(dir: &Path, script: &str, args: &[String]) -> Result<String, Error> {
    let output = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .arg(script)
        .current_dir(dir)
        .output()
        .map_err(Error::Spawn)?;
    if !output.status.success() {
        return Err(Error::Sbatch {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    parse_job_id(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests;
