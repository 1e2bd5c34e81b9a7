//! The scrbench command line, shared by the `scrbench` binary and `cargo xtask`.
//!
//! Every command is a thin layer over the library crates: `run`, `status`, `explain` and `report`
//! over [`pipeline`], `cache` over [`store`], `dataset` over [`dataset`], `benchmark` over
//! [`benchmark`]. Errors are reported here, once, with their causes. `run --executor slurm`
//! submits the run to Slurm instead ([`slurm`], scripts from [`cluster`]).

mod slurm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use pipeline::Pipeline;
use pipeline::config::{DeviceChoice, StudyConfig};
use pipeline::items::{ItemId, Selection, Shard};
use pipeline::runner::RunOptions;
use tokio_util::sync::CancellationToken;

/// Exit status when some items failed (they are listed and will be retried next run).
pub const EXIT_FAILED_ITEMS: u8 = 2;
/// Exit status when the run was interrupted (Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "scrbench",
    version,
    about = "Multi-subject personalization stress test: generate, embed, score, report."
)]
pub struct Cli {
    /// Study configuration [default: pipeline.yaml in the current directory or an ancestor].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Use this cache directory instead of the config's (e.g. a shared cache on a cluster).
    #[arg(long, global = true)]
    pub cache: Option<PathBuf>,
    /// Write reports under this directory instead of the config's.
    #[arg(long, global = true)]
    pub reports: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the study (only what is missing, failed or out of date).
    Run(RunArgs),
    /// Done / missing / failed items per model and stage.
    Status {
        #[command(flatten)]
        select: SelectArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an item's keys and why each stage would or would not run.
    Explain {
        /// `<model>/<prompt_id>/<seed>`, e.g. `mosaic-paper/01_no_interaction/42`.
        item: String,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild `reports/<study>/` from the cache without computing anything.
    Report,
    /// Inspect and maintain the content-addressed cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Fetch or import datasets, verified against pinned digests.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Check or convert benchmark files.
    #[command(subcommand)]
    Benchmark(BenchmarkCommand),
    /// Work with per-image scores computed elsewhere.
    #[command(subcommand)]
    Scores(ScoresCommand),
}

#[derive(Debug, Subcommand)]
pub enum ScoresCommand {
    /// Aggregate the paper's published per-image scores (`eval_outputs/<model>_results.json`) with
    /// scrbench's code and write a full report (Table 1, scene tables, CIs, figures).
    Import {
        /// `<model>_results.json` files, in the column order wanted (e.g. mosaic, xverse, psr).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output directory; its name is the study's name in the report.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args, Default)]
pub struct SelectArgs {
    /// Only these models (repeatable; default: all in the config).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Only these prompt ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub prompts: Vec<String>,
    /// Only these seeds (comma-separated; default: the study's).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// At most this many items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// A deterministic slice I/N of the items (0-based), e.g. `0/4`.
    #[arg(long)]
    pub shard: Option<Shard>,
}

impl SelectArgs {
    fn selection(&self) -> Selection {
        Selection {
            models: self.models.clone(),
            prompts: self.prompts.clone(),
            seeds: self.seeds.clone(),
            limit: self.limit,
            shard: self.shard,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// List what would run and why; compute nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where the run happens: `local` (this process) or `slurm` (an array job over the shared
    /// cache and a report job after it; `--dry-run` prints their scripts).
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    #[command(flatten)]
    pub slurm: slurm::SlurmArgs,
}

/// Where `run` computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Executor {
    #[default]
    Local,
    Slurm,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Counts and sizes.
    Stats,
    /// Re-hash every blob and check every entry; remove what is corrupt.
    Verify,
    /// Remove what the current study does not reference.
    Gc {
        /// Keep unreferenced entries younger than this (e.g. `7d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        keep_younger: Option<std::time::Duration>,
        /// Remove unreferenced entries, oldest first, until the cache is at most this size (e.g. `10G`).
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
        /// Report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Download (or import with --from) a dataset and verify every file.
    Fetch {
        /// Dataset name, e.g. `p13n-workshop`.
        name: String,
        /// Also fetch a model's published outputs (repeatable): mosaic, xverse, psr.
        #[arg(long)]
        results: Vec<String>,
        /// Import from a local copy laid out like the dataset's repository instead of downloading.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Destination [default: <cache>/datasets/<name>].
        #[arg(long)]
        dest: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchmarkCommand {
    /// Load and validate a benchmark (dataset folder, prompts_50.txt or YAML) and summarise it.
    Check { path: PathBuf },
    /// Convert a benchmark to scrbench's YAML format.
    Convert {
        path: PathBuf,
        /// Output file [default: stdout].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 500M or 10G"))?;
    let scale: u64 = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use K, M, G or T)")),
    };
    Ok((number * scale as f64) as u64)
}

/// Parses `args` and runs the command; prints errors and returns the exit status.
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let progress = matches!(cli.command, Command::Run(ref a) if !a.json)
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    init_tracing(progress);
    match execute(cli, progress) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(progress: bool) {
    let default = if progress { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Where the study configuration comes from, and the command-line overrides of its paths.
#[derive(Clone, Debug)]
struct Study {
    config: Option<PathBuf>,
    cache: Option<PathBuf>,
    reports: Option<PathBuf>,
}

fn config_path(config: &Option<PathBuf>) -> Result<PathBuf> {
    match config {
        Some(path) => Ok(path.clone()),
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            StudyConfig::find_default(&cwd).with_context(|| {
                format!(
                    "no pipeline.yaml in {} or its ancestors; pass --config FILE",
                    cwd.display()
                )
            })
        }
    }
}

fn load_config(study: &Study) -> Result<StudyConfig> {
    let mut config = StudyConfig::load(&config_path(&study.config)?)?;
    if let Some(cache) = &study.cache {
        config.cache = cache.clone();
    }
    if let Some(reports) = &study.reports {
        config.reports = reports.clone();
    }
    Ok(config)
}

fn open(study: &Study) -> Result<Pipeline> {
    Ok(Pipeline::open(load_config(study)?)?)
}

/// Opens the study for a command that only reads the store (`status`, `explain`, `report`,
/// `cache gc`, planning a Slurm submission): no model runs, so the encoders are set up on the CPU
/// whatever `device:` says, and a login node or a report job without a GPU can read a
/// `device: cuda` study. Sound because the device is in no key (same keys, same store).
fn open_to_read(study: &Study) -> Result<Pipeline> {
    let mut config = load_config(study)?;
    config.device = DeviceChoice::Cpu;
    Ok(Pipeline::open(config)?)
}

fn execute(cli: Cli, progress: bool) -> Result<ExitCode> {
    let study = Study {
        config: cli.config,
        cache: cli.cache,
        reports: cli.reports,
    };
    match cli.command {
        Command::Run(args) => run(&study, args, progress),
        Command::Status { select, json } => {
            let status = open_to_read(&study)?.status(&select.selection())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { item, json } => {
            let id: ItemId = item.parse().map_err(anyhow::Error::msg)?;
            let explanation = open_to_read(&study)?.explain(&id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&explanation)?);
            } else {
                print!("{explanation}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report => {
            let pipeline = open_to_read(&study)?;
            let dir = pipeline.write_report()?;
            pipeline.flush()?;
            println!("report written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache(command) => cache(&study, command),
        Command::Dataset(command) => dataset_command(&study, command),
        Command::Benchmark(command) => benchmark_command(command),
        Command::Scores(ScoresCommand::Import { files, out }) => {
            let report = scores::import_and_report(&files, &out)?;
            println!("report written to {}", report.report_md.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run(study: &Study, args: RunArgs, progress: bool) -> Result<ExitCode> {
    if args.executor == Executor::Slurm {
        return slurm::submit(study, &args);
    }
    if !args.slurm.is_empty() {
        bail!("--array, --gpus-per-task, --partition, --time and --account need --executor slurm");
    }
    let pipeline = Arc::new(open(study)?);
    let selection = args.select.selection();
    let options = RunOptions {
        dry_run: args.dry_run,
        progress,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing the items in flight (Ctrl-C again to abort now)");
                on_signal.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
            }
        });
        pipeline.run(&selection, &options, cancel).await
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if args.dry_run {
        for would in &summary.would_run {
            let reasons: Vec<String> = would
                .reasons
                .iter()
                .map(pipeline::explain::describe)
                .collect();
            println!("{} [{}]: {}", would.item, would.stage, reasons.join("; "));
        }
        println!("{} item stages would run", summary.would_run.len());
    } else {
        println!(
            "{:<15} {:>7} {:>9} {:>7} {:>8}",
            "stage", "cached", "computed", "failed", "blocked"
        );
        for (stage, c) in &summary.stages {
            println!(
                "{stage:<15} {:>7} {:>9} {:>7} {:>8}",
                c.cached, c.computed, c.failed, c.blocked
            );
        }
        for failure in &summary.failures {
            println!(
                "failed {} [{}]: {}",
                failure.item, failure.stage, failure.message
            );
        }
        println!("{} items in {:.2}s", summary.items, summary.seconds);
    }
    if let Some(fatal) = &summary.fatal {
        bail!("the run stopped: {fatal}");
    }
    Ok(if summary.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if !summary.failures.is_empty() {
        ExitCode::from(EXIT_FAILED_ITEMS)
    } else {
        ExitCode::SUCCESS
    })
}

fn cache(study: &Study, command: CacheCommand) -> Result<ExitCode> {
    match command {
        CacheCommand::Stats => {
            let config = load_config(study)?;
            let stats = store::Store::open(&config.cache)?.stats()?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        CacheCommand::Verify => {
            let config = load_config(study)?;
            let report = store::Store::open(&config.cache)?.verify()?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.corrupt.is_empty() || !report.broken_actions.is_empty() {
                eprintln!("removed corrupt entries; the next run recomputes them");
            }
        }
        CacheCommand::Gc {
            keep_younger,
            max_size,
            dry_run,
        } => {
            let pipeline = open_to_read(study)?;
            let keep = pipeline.referenced_keys()?;
            let policy = store::GcPolicy {
                keep_younger_than: keep_younger.map(|d| d.as_secs()),
                max_bytes: max_size,
                dry_run,
            };
            let report = pipeline.store.gc(&keep, &policy)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dataset_command(study: &Study, command: DatasetCommand) -> Result<ExitCode> {
    let DatasetCommand::Fetch {
        name,
        results,
        from,
        dest,
    } = command;
    let spec = dataset::spec(&name)?;
    let dest = match dest {
        Some(dest) => dest,
        None => default_cache(study)?.join("datasets").join(&name),
    };
    let mut parts = vec![dataset::Part::Benchmark];
    parts.extend(results.into_iter().map(dataset::Part::Results));
    let report = match from {
        Some(from) => dataset::import(&spec, &parts, &from, &dest)?,
        None => dataset::fetch(&spec, &parts, &dest, dataset::GITHUB_RAW)?,
    };
    println!(
        "{} files written ({} bytes), {} already present and verified",
        report.written.len(),
        report.bytes,
        report.already_present.len()
    );
    println!("dataset {name} is ready in {}", dest.display());
    Ok(ExitCode::SUCCESS)
}

/// `--cache`, else the study config's cache if there is a config, else `./cache`.
fn default_cache(study: &Study) -> Result<PathBuf> {
    if let Some(cache) = &study.cache {
        return Ok(cache.clone());
    }
    match config_path(&study.config) {
        Ok(_) => Ok(load_config(study)?.cache),
        Err(_) if study.config.is_none() => Ok(Path::new("cache").to_path_buf()),
        Err(e) => Err(e),
    }
}

fn benchmark_command(command: BenchmarkCommand) -> Result<ExitCode> {
    match command {
        BenchmarkCommand::Check { path } => {
            let bench = benchmark::Benchmark::load(&path)?;
            println!(
                "{}: {} prompts, {} subjects: valid",
                bench.name,
                bench.prompts.len(),
                bench.subjects.len()
            );
        }
        BenchmarkCommand::Convert { path, out } => {
            let bench = benchmark::Benchmark::load(&path)?;
            let Some(images) = bench.subjects.first().and_then(|s| s.image.parent()) else {
                bail!("{}: the benchmark has no subjects", path.display());
            };
            let yaml = benchmark::yaml::to_yaml(&bench, images);
            match out {
                Some(out) => std::fs::write(&out, yaml)
                    .with_context(|| format!("cannot write {}", out.display()))?,
                None => print!("{yaml}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
