//! `scrbench run --executor slurm`: the study as a Slurm array job over the shared cache, plus a
//! report job that runs once every task succeeded.
//!
//! Completion is read from the cache, never from `sacct`: before submitting, every selected item
//! is evaluated against the store (as `status` does). Nothing is submitted when every item is
//! done; otherwise the array holds only the shards (`i` of `--array N`) that still have a missing
//! or failed item, and each task's runner skips whatever another process finished meanwhile.
//! The scripts come from [`cluster::Plan`]; this module gathers what goes into the plan and
//! submits it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::Args;
use cluster::{Plan, Resources};
use pipeline::Pipeline;
use pipeline::config::{DeviceChoice, SlurmConfig};
use pipeline::runner::StageState;
use serde_json::json;

use crate::{RunArgs, Study, config_path, load_config};

/// Options of `--executor slurm`; each overrides the study's `slurm:` section.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Slurm (with --executor slurm)")]
pub struct SlurmArgs {
    /// Array tasks: the study is split into N shards, task i runs shard i/N.
    #[arg(long, value_name = "N")]
    pub array: Option<usize>,
    /// GPUs per array task.
    #[arg(long, value_name = "G")]
    pub gpus_per_task: Option<u32>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit per task, as `sbatch --time` takes it (e.g. `4:00:00`).
    #[arg(long)]
    pub time: Option<String>,
    /// Account to charge.
    #[arg(long)]
    pub account: Option<String>,
}

impl SlurmArgs {
    pub(crate) fn is_empty(&self) -> bool {
        self.array.is_none()
            && self.gpus_per_task.is_none()
            && self.partition.is_none()
            && self.time.is_none()
            && self.account.is_none()
    }
}

/// How much of the selection is done, and which shards still have work.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Work {
    pub items: usize,
    pub done: usize,
    pub missing: usize,
    pub failed: usize,
    /// Reference items (`@references`) not done yet; every shard runs the ones it needs.
    pub references_pending: usize,
    pub tasks: BTreeSet<usize>,
}

/// Evaluates the selection (without a shard) against the store and assigns items to shards
/// exactly as `run --shard i/N` does: the `j`-th selected item belongs to shard `j % N`.
pub(crate) fn work(pipeline: &Pipeline, args: &RunArgs, shards: usize) -> Result<Work> {
    let evaluated = pipeline.evaluate(&args.select.selection())?;
    let mut work = Work::default();
    for (item, states) in &evaluated {
        let complete = states
            .iter()
            .all(|(_, state)| matches!(state, StageState::Done(_)));
        if item.is_reference() {
            work.references_pending += usize::from(!complete);
            continue;
        }
        let shard = work.items % shards;
        work.items += 1;
        if complete {
            work.done += 1;
        } else {
            if states.iter().any(|(_, state)| state.failed().is_some()) {
                work.failed += 1;
            } else {
                work.missing += 1;
            }
            work.tasks.insert(shard);
        }
    }
    if work.references_pending > 0 {
        // Each shard computes the references its items use; let every non-empty shard run.
        work.tasks.extend(0..shards.min(work.items));
    }
    Ok(work)
}

fn text(path: &Path) -> Result<String> {
    match path.to_str() {
        Some(s) => Ok(s.to_owned()),
        None => bail!(
            "{} is not valid UTF-8; it cannot be written into a job script",
            path.display()
        ),
    }
}

/// Merges the command line over the study's `slurm:` section.
fn resources(args: &SlurmArgs, config: &SlurmConfig) -> Resources {
    Resources {
        gpus_per_task: args.gpus_per_task.or(config.gpus_per_task),
        partition: args.partition.clone().or_else(|| config.partition.clone()),
        time: args.time.clone().or_else(|| config.time.clone()),
        account: args.account.clone().or_else(|| config.account.clone()),
        extra: config.extra.clone(),
    }
}

/// The run's options after `run`, as each array task gets them (the selection minus the shard).
fn selection_args(args: &RunArgs) -> Vec<String> {
    let select = &args.select;
    let mut out: Vec<String> = select
        .models
        .iter()
        .map(|m| format!("--model={m}"))
        .collect();
    if !select.prompts.is_empty() {
        out.push(format!("--prompts={}", select.prompts.join(",")));
    }
    if !select.seeds.is_empty() {
        let seeds: Vec<String> = select.seeds.iter().map(u64::to_string).collect();
        out.push(format!("--seeds={}", seeds.join(",")));
    }
    if let Some(limit) = select.limit {
        out.push(format!("--limit={limit}"));
    }
    out
}

/// `<cache>/slurm/<study>/`: where each submission gets a directory of scripts and logs.
fn runs_dir(cache: &Path, study: &str) -> PathBuf {
    let name: String = study
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache.join("slurm").join(name)
}

/// A new directory `<runs>/<UTC timestamp>[-k]/`.
fn new_run_dir(runs: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    for k in 1.. {
        let name = if k == 1 {
            stamp.clone()
        } else {
            format!("{stamp}-{k}")
        };
        let dir = runs.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    unreachable!()
}

fn write_script(dir: &Path, name: &str, script: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// `scrbench run --executor slurm …`.
pub(crate) fn submit(study: &Study, args: &RunArgs) -> Result<ExitCode> {
    if let Some(shard) = args.select.shard {
        bail!(
            "--shard {shard} and --executor slurm do not mix: the array splits the study into \
             --array N shards itself"
        );
    }
    let config_file = std::path::absolute(config_path(&study.config)?)?;
    let mut config = load_config(study)?;
    config.cache = std::path::absolute(&config.cache)?;
    config.reports = std::path::absolute(&config.reports)?;
    let defaults = config.slurm.clone().unwrap_or_default();
    let Some(shards) = args.slurm.array.or(defaults.array) else {
        bail!("--executor slurm needs --array N (or `slurm: {{array: N}}` in the study)");
    };
    if shards == 0 {
        bail!("--array must be at least 1");
    }
    let binary = std::env::current_exe().context("cannot find the scrbench binary")?;
    let program = vec![
        text(&binary)?,
        "--config".into(),
        text(&config_file)?,
        "--cache".into(),
        text(&config.cache)?,
        "--reports".into(),
        text(&config.reports)?,
    ];
    let (cache, study_name) = (config.cache.clone(), config.study.clone());
    // Planning reads the store only: like `status`, it needs no GPU on the submitting node (the
    // tasks read the study themselves, `device:` included).
    config.device = DeviceChoice::Cpu;
    let pipeline = Pipeline::open(config)?;
    let work = work(&pipeline, args, shards)?;
    let plan = Plan {
        study: study_name.clone(),
        program,
        run_args: selection_args(args),
        shards,
        tasks: work.tasks.iter().copied().collect(),
        resources: resources(&args.slurm, &defaults),
    };
    let mut line = format!(
        "study {study_name}: {} items, {} done, {} missing, {} failed",
        work.items, work.done, work.missing, work.failed
    );
    if work.references_pending > 0 {
        line.push_str(&format!(
            ", {} reference subjects to compute",
            work.references_pending
        ));
    }
    if plan.tasks.is_empty() {
        if args.json {
            let summary = json!({
                "study": study_name, "items": work.items, "done": work.done,
                "missing": 0, "failed": 0, "shards": shards, "tasks": [], "submitted": false,
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            println!("{line}");
            println!(
                "every item is done: nothing to submit (`scrbench report` rebuilds the report)"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let array_script = plan.array_script()?;
    let report_script = plan.report_script()?;
    let array_spec = cluster::array_spec(&plan.tasks);
    line.push_str(&format!(
        "; {} of {shards} array tasks have work ({array_spec})",
        plan.tasks.len()
    ));
    let runs = runs_dir(&cache, &study_name);
    let mut summary = json!({
        "study": study_name, "items": work.items, "done": work.done, "missing": work.missing,
        "failed": work.failed, "shards": shards, "tasks": plan.tasks, "submitted": false,
    });

    if args.dry_run {
        if args.json {
            summary["array_script"] = array_script.into();
            summary["report_script"] = report_script.into();
            println!("{}", serde_json::to_string_pretty(&summary)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!("{line}");
        println!(
            "dry run: would write these scripts to {}/<timestamp>/ and there run\n  \
             sbatch --parsable {}\n  sbatch --parsable {} {}",
            runs.display(),
            cluster::ARRAY_SCRIPT,
            cluster::report_dependency("<array job id>").join(" "),
            cluster::REPORT_SCRIPT,
        );
        println!("--- {}\n{array_script}", cluster::ARRAY_SCRIPT);
        println!("--- {}\n{report_script}", cluster::REPORT_SCRIPT);
        return Ok(ExitCode::SUCCESS);
    }

    let dir = new_run_dir(&runs)?;
    write_script(&dir, cluster::ARRAY_SCRIPT, &array_script)?;
    write_script(&dir, cluster::REPORT_SCRIPT, &report_script)?;
    let array_job =
        cluster::sbatch(&dir, cluster::ARRAY_SCRIPT, &[]).context("submitting the array job")?;
    let report_job = cluster::sbatch(
        &dir,
        cluster::REPORT_SCRIPT,
        &cluster::report_dependency(&array_job),
    )
    .with_context(|| {
        format!(
            "submitting the report job (array job {array_job} was submitted and will run; \
             afterwards run `scrbench report`, or `scancel {array_job}`)"
        )
    })?;
    summary["submitted"] = true.into();
    summary["dir"] = text(&dir)?.into();
    summary["array_job"] = array_job.clone().into();
    summary["report_job"] = report_job.clone().into();
    std::fs::write(
        dir.join("jobs.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )
    .with_context(|| format!("cannot write {}", dir.join("jobs.json").display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{line}");
        println!(
            "submitted array job {array_job} (tasks {array_spec} of {shards}) and report job \
             {report_job} (runs once every task succeeded)"
        );
        println!("scripts and logs: {}", dir.display());
        println!(
            "progress: scrbench --config {} status",
            cluster::shell_quote(&text(&config_file)?)?
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_overrides_the_study_section() {
        let config = SlurmConfig {
            array: Some(8),
            gpus_per_task: Some(1),
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            account: None,
            extra: vec!["--mem=8G".into()],
        };
        let args = SlurmArgs {
            partition: Some("debug".into()),
            account: Some("lab".into()),
            ..SlurmArgs::default()
        };
        assert_eq!(
            resources(&args, &config),
            Resources {
                gpus_per_task: Some(1),
                partition: Some("debug".into()),
                time: Some("1:00:00".into()),
                account: Some("lab".into()),
                extra: vec!["--mem=8G".into()],
            }
        );
    }

    #[test]
    fn run_directories_are_named_after_the_study_and_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = runs_dir(tmp.path(), "my study/../x");
        assert_eq!(runs, tmp.path().join("slurm/my_study____x"));
        let a = new_run_dir(&runs).unwrap();
        let b = new_run_dir(&runs).unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
    }
}
