//! The fuzzer: configs generated from the key set and mutated from the shipped ones go
//! through the validator (`config::parse`), and every accepted one through what
//! `check-config`, `windows` and `polkit-rule` print and then through the engine for a
//! simulated day (see `day`). A panic anywhere, a hang, an engine that would stop polling, or
//! a config error that does not point inside the file is a finding; the run ends with each
//! one's seed, config and a command that replays it.
//!
//! `cargo test --test fuzz` runs the time-boxed pass CI runs. Environment:
//! - `UNITWARDEN_FUZZ_CASES` (default 100000) and `UNITWARDEN_FUZZ_SECS` (default 170): the run
//!   stops at whichever comes first.
//! - `UNITWARDEN_FUZZ_SEED`: the run's seed (default fixed, so CI is reproducible); each case's
//!   own seed is derived from it and its index.
//! - `UNITWARDEN_FUZZ_REPLAY=<case seed>`: runs that one case, printing its config and the
//!   inputs the engine got.
//! - `UNITWARDEN_FUZZ_JOBS` (default: the machine's cores): processes the cases are split over,
//!   each under another host time zone (`TZ`).

mod day;
mod generate;
mod mutate;
mod rng;
mod seeds;
mod trace;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unitwarden::config::{self, ConfigError};
use unitwarden::unit::UnitPattern;

use rng::Rng;

/// "unitward": the default run seed.
const DEFAULT_SEED: u64 = 0x756e_6974_7761_7264;
const DEFAULT_CASES: u64 = 100_000;
const DEFAULT_SECS: u64 = 170;
/// A single case taking this long is a hang (a typical one takes milliseconds).
const HANG: Duration = Duration::from_secs(20);
/// Distinct findings after which a run stops early.
const MAX_FINDINGS: usize = 20;
const PATH: &str = "/fuzz/unitwarden.toml";

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// How a case's config was made, and its text: everything follows from the seed. Mutations
/// start from an accepted seed most of the time: one edit away from a config that works is
/// where a value at an edge gets through to the engine.
fn make_config(seed: u64, corpus: &Corpus) -> (&'static str, String) {
    let mut rng = Rng::new(seed);
    let base = match rng.percent(70) {
        true => rng.pick_ref(&corpus.accepted).clone(),
        false => rng.pick_ref(&corpus.all).clone(),
    };
    let other = rng.pick_ref(&corpus.all).clone();
    match rng.below(100) {
        0..=3 => ("seed", base),
        4..=59 => ("mutated seed", mutate::mutate(&mut rng, &base, &other)),
        60..=84 => ("generated", generate::config(&mut rng)),
        _ => {
            let g = generate::config(&mut rng);
            ("mutated generated", mutate::mutate(&mut rng, &g, &base))
        }
    }
}

enum Outcome {
    Rejected,
    Accepted(day::DayStats),
}

/// One case: the validator, what check-config and its siblings print, the engine's day.
fn run_case(seed: u64, corpus: &Corpus) -> Outcome {
    let (_, text) = make_config(seed, corpus);
    let parsed = config::parse(Path::new(PATH), &text);
    same_as_read_whole(&text, &parsed);
    let settings = match parsed {
        Ok(s) => s,
        Err(e) => {
            check_error(&e, &text);
            return Outcome::Rejected;
        }
    };
    let mut rng = Rng::new(seed ^ 0x5eed);
    settings.summary();
    let patterns: Vec<&UnitPattern> = settings.units.iter().map(|u| &u.pattern).collect();
    let recovery: Vec<_> = settings
        .units
        .iter()
        .filter_map(|u| Some(&u.recovery.as_ref()?.unit))
        .collect();
    unitwarden::polkit::rule("unitwarden", &settings.path, &patterns, &recovery);
    let (_, at) = day::start_instant(&mut rng);
    let host = jiff::tz::TimeZone::system();
    unitwarden::window::format_upcoming(&settings.calendar, at, 1 + rng.below(20), &host);
    Outcome::Accepted(day::run(rng.next_u64(), &text, settings, &corpus.accepted))
}

/// A refusal names the file, and for the file's contents a line and column inside it.
fn check_error(e: &ConfigError, text: &str) {
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{PATH}:")),
        "error without the path: {shown}"
    );
    if let ConfigError::Invalid { line, col, .. } = e {
        let lines = text.split('\n').count();
        assert!(
            *line >= 1 && *line <= lines && *col >= 1,
            "error at {line}:{col} outside the file ({lines} lines): {shown}"
        );
    }
}

/// A file with 64 `[[unit]]` blocks or more is read a slice of blocks at a time
/// (`config/document.rs`), which must decide exactly as reading it whole does. A quoted key in
/// a header (`[["unit"]]`, the same table) makes it read the file whole: both readings must
/// accept the same settings, or both refuse.
fn same_as_read_whole(text: &str, sliced: &Result<config::Settings, ConfigError>) {
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.iter().filter(|l| l.trim() == "[[unit]]").count() < 64 {
        return;
    }
    // The first header, unless a multi-line string might hold it.
    let Some(i) = lines.iter().position(|l| l.trim() == "[[unit]]") else {
        return;
    };
    let before = lines[..i].join("\n");
    if before.contains("\"\"\"") || before.contains("'''") {
        return;
    }
    let mut whole = lines.clone();
    whole[i] = "[[\"unit\"]]";
    let whole = config::parse(Path::new(PATH), &whole.join("\n"));
    match (sliced, &whole) {
        (Ok(a), Ok(b)) => assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "the file read in slices gives other settings than read whole"
        ),
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "read in slices: {:?}; read whole: {:?}",
            a.as_ref().map(|_| "accepted").map_err(|e| e.to_string()),
            b.as_ref().map(|_| "accepted").map_err(|e| e.to_string())
        ),
    }
}

/// The seeds, and those of them the validator accepts (also what a reload switches to,
/// besides mutations).
struct Corpus {
    all: Vec<String>,
    accepted: Vec<String>,
}

impl Corpus {
    fn load() -> Corpus {
        let all = seeds::load();
        let accepted = all
            .iter()
            .filter(|t| config::parse(Path::new(PATH), t).is_ok())
            .cloned()
            .collect();
        Corpus { all, accepted }
    }
}

#[derive(Clone)]
struct Panic {
    message: String,
    location: String,
    backtrace: String,
}

thread_local! {
    static CAPTURING: RefCell<bool> = const { RefCell::new(false) };
    static LAST_PANIC: RefCell<Option<Panic>> = const { RefCell::new(None) };
}

/// Panics inside a case are recorded for the report instead of printed; others print as
/// usual.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !CAPTURING.with(|c| *c.borrow()) {
            return default(info);
        }
        let message = match (
            info.payload().downcast_ref::<&str>(),
            info.payload().downcast_ref::<String>(),
        ) {
            (Some(s), _) => s.to_string(),
            (_, Some(s)) => s.clone(),
            _ => "(non-string panic)".into(),
        };
        let location = info
            .location()
            .map_or_else(|| "?".into(), |l| format!("{}:{}", l.file(), l.line()));
        let backtrace = std::backtrace::Backtrace::force_capture().to_string();
        LAST_PANIC.with(|p| {
            *p.borrow_mut() = Some(Panic {
                message,
                location,
                backtrace,
            })
        });
    }));
}

/// The case a shard is on and since when, for the hang watch.
type Current = Mutex<Option<(u64, u64, Instant)>>;

struct Finding {
    index: u64,
    seed: u64,
    panic: Panic,
    count: u64,
}

/// What a shard did, summed by the parent from the shards' last lines.
#[derive(Default, Debug, Clone, Copy)]
struct Totals {
    cases: u64,
    accepted: u64,
    inputs: u64,
    restarts: u64,
    max_rewakes: u64,
}

impl Totals {
    const TAG: &str = "fuzz-shard-totals";

    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            Self::TAG,
            self.cases,
            self.accepted,
            self.inputs,
            self.restarts,
            self.max_rewakes
        )
    }

    fn parse(output: &str) -> Option<Totals> {
        // libtest may have begun the line (`test name ... `) before the test printed.
        let line = output[output.find(Self::TAG)?..].lines().next()?;
        let n: Vec<u64> = line
            .split(' ')
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        Some(Totals {
            cases: *n.first()?,
            accepted: *n.get(1)?,
            inputs: *n.get(2)?,
            restarts: *n.get(3)?,
            max_rewakes: *n.get(4)?,
        })
    }

    fn add(&mut self, o: Totals) {
        self.cases += o.cases;
        self.accepted += o.accepted;
        self.inputs += o.inputs;
        self.restarts += o.restarts;
        self.max_rewakes = self.max_rewakes.max(o.max_rewakes);
    }
}

/// Host time zones the shards run under (`TZ`): the engine's log lines, alerts and status
/// replies, and windows without a `timezone`, are in the host's zone.
const HOST_ZONES: [&str; 8] = [
    "Europe/Berlin",
    "UTC",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "Pacific/Apia",
    "America/New_York",
    "Asia/Kathmandu",
    "Europe/Dublin",
];

/// The run's settings, from the environment.
struct Run {
    seed: u64,
    cases: u64,
    budget: Duration,
    jobs: u64,
}

impl Run {
    fn from_env() -> Run {
        Run {
            seed: env_u64("UNITWARDEN_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
            cases: env_u64("UNITWARDEN_FUZZ_CASES").unwrap_or(DEFAULT_CASES),
            budget: Duration::from_secs(env_u64("UNITWARDEN_FUZZ_SECS").unwrap_or(DEFAULT_SECS)),
            jobs: env_u64("UNITWARDEN_FUZZ_JOBS").map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
                |n| n.max(1),
            ),
        }
    }
}

/// The CI pass, or a long run: the cases are split over one process per core (each under its
/// own host time zone, and a crash that unwinding cannot catch takes only its own shard).
#[test]
fn fuzz_configs_through_the_validator_and_the_engine() {
    let corpus = Corpus::load();
    assert!(
        corpus.all.len() >= 20,
        "only {} seeds found",
        corpus.all.len()
    );
    assert!(!corpus.accepted.is_empty(), "no seed config is accepted");
    if let Some(seed) = env_u64("UNITWARDEN_FUZZ_REPLAY") {
        return replay(seed, &corpus);
    }
    let run = Run::from_env();
    if let Ok(shard) = std::env::var("UNITWARDEN_FUZZ_SHARD") {
        let (k, _) = shard.split_once('/').expect("UNITWARDEN_FUZZ_SHARD=k/n");
        return run_shard(&run, k.parse().expect("a shard number"), &corpus);
    }
    let started = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<(String, std::process::Child)> = (0..run.jobs)
        .map(|k| {
            let zone = HOST_ZONES[((run.seed ^ k) % HOST_ZONES.len() as u64) as usize];
            let child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "fuzz_configs_through_the_validator_and_the_engine",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("UNITWARDEN_FUZZ_SHARD", format!("{k}/{}", run.jobs))
                .env("UNITWARDEN_FUZZ_JOBS", run.jobs.to_string())
                .env("TZ", zone)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("a shard starts");
            (zone.to_string(), child)
        })
        .collect();
    let mut totals = Totals::default();
    let mut failed = Vec::new();
    for (zone, child) in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(t) = Totals::parse(&stdout) {
            totals.add(t);
        }
        if !out.status.success() {
            failed.push(format!(
                "shard under TZ={zone} failed ({}):\n{stdout}\n{stderr}",
                out.status
            ));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let summary = format!(
        "fuzz: {} cases in {elapsed:.1} s ({:.0}/s, {} jobs, seed {:#x}, {} seeds of which {} accepted): {} rejected, {} accepted and run through a simulated day ({} engine inputs, {} restarts, at most {} extra timers at one moment)",
        totals.cases,
        totals.cases as f64 / elapsed.max(1e-9),
        run.jobs,
        run.seed,
        corpus.all.len(),
        corpus.accepted.len(),
        totals.cases - totals.accepted,
        totals.accepted,
        totals.inputs,
        totals.restarts,
        totals.max_rewakes,
    );
    // Straight to the process's stderr: the counts belong in CI's log even when the test
    // passes and its output is captured.
    let _ = writeln!(std::io::stderr(), "{summary}");
    assert!(failed.is_empty(), "{summary}\n{}", failed.join("\n"));
    if totals.cases < run.cases {
        let _ = writeln!(
            std::io::stderr(),
            "fuzz: the time box ({} s) ended the run before its {} cases",
            run.budget.as_secs(),
            run.cases
        );
    }
}

/// Cases `k`, `k + jobs`, `k + 2 jobs`, ... until the count or the time box is reached.
fn run_shard(run: &Run, k: u64, corpus: &Corpus) {
    install_panic_hook();
    CAPTURING.with(|c| *c.borrow_mut() = true);
    let started = Instant::now();
    let current: Arc<Current> = Arc::new(Mutex::new(None));
    {
        let current = Arc::clone(&current);
        std::thread::spawn(move || watch_for_hangs(&current, &Corpus::load()));
    }
    let mut totals = Totals::default();
    let mut findings: BTreeMap<String, Finding> = BTreeMap::new();
    let mut index = k;
    while index < run.cases && started.elapsed() < run.budget && findings.len() < MAX_FINDINGS {
        let seed = rng::case_seed(run.seed, index);
        *current.lock().unwrap() = Some((index, seed, Instant::now()));
        let outcome = catch_unwind(AssertUnwindSafe(|| run_case(seed, corpus)));
        totals.cases += 1;
        match outcome {
            Ok(Outcome::Rejected) => {}
            Ok(Outcome::Accepted(st)) => {
                totals.accepted += 1;
                totals.inputs += st.inputs;
                totals.restarts += st.restarts;
                totals.max_rewakes = totals.max_rewakes.max(st.max_rewakes as u64);
            }
            Err(_) => {
                let panic = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap();
                findings
                    .entry(panic.location.clone())
                    .or_insert(Finding {
                        index,
                        seed,
                        panic,
                        count: 0,
                    })
                    .count += 1;
            }
        }
        index += run.jobs;
    }
    *current.lock().unwrap() = None;
    println!("{}", totals.line());
    if !findings.is_empty() {
        let tz = std::env::var("TZ").unwrap_or_default();
        let mut report = format!("{} distinct finding(s):\n", findings.len());
        for f in findings.values() {
            let (origin, text) = make_config(f.seed, corpus);
            report.push_str(&format!(
                "\n--- {} ({} case(s)), first at case {} (case seed {:#x}, {origin} config)\n{}\nconfig:\n{text}\nreplay: TZ={tz} UNITWARDEN_FUZZ_REPLAY={:#x} cargo test --test fuzz fuzz_configs -- --nocapture\n{}\n",
                f.panic.location, f.count, f.index, f.seed, f.panic.message, f.seed, short_backtrace(&f.panic.backtrace)
            ));
        }
        // The hook keeps the cases' panics quiet; this one is the shard's report and must be
        // seen.
        CAPTURING.with(|c| *c.borrow_mut() = false);
        panic!("{report}");
    }
}

/// The frames of a backtrace that are this crate's own code.
fn short_backtrace(bt: &str) -> String {
    let lines: Vec<&str> = bt.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("unitwarden::") && !l.contains("fuzz::") {
            out.push(l.trim().to_string());
            if let Some(at) = lines
                .get(i + 1)
                .filter(|n| n.trim_start().starts_with("at "))
            {
                out.push(format!("    {}", at.trim()));
            }
        }
    }
    out.truncate(30);
    out.join("\n")
}

/// Runs one case again, telling its story.
fn replay(seed: u64, corpus: &Corpus) {
    trace::enable();
    let (origin, text) = make_config(seed, corpus);
    println!("case seed {seed:#x}, {origin} config:\n{text}\n---");
    match config::parse(Path::new(PATH), &text) {
        Ok(_) => println!("accepted"),
        Err(e) => println!("rejected: {e}"),
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| run_case(seed, corpus)));
    for line in trace::take() {
        println!("{line}");
    }
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// A case that runs far longer than any should is a hang inside one input: nothing can
/// unwind it, so this says which case it is and ends the shard.
fn watch_for_hangs(current: &Arc<Current>, corpus: &Corpus) {
    while Arc::strong_count(current) > 1 {
        std::thread::sleep(Duration::from_millis(500));
        let Some((index, seed, since)) = *current.lock().unwrap() else {
            continue;
        };
        if since.elapsed() > HANG {
            let (origin, text) = make_config(seed, corpus);
            let tz = std::env::var("TZ").unwrap_or_default();
            let _ = writeln!(
                std::io::stderr(),
                "fuzz: case {index} (case seed {seed:#x}, {origin} config) has run for {} s: a hang\nconfig:\n{text}\nreplay: TZ={tz} UNITWARDEN_FUZZ_REPLAY={seed:#x} cargo test --test fuzz fuzz_configs -- --nocapture",
                since.elapsed().as_secs()
            );
            std::process::exit(101);
        }
    }
}

/// Each input that once crashed or hung something: refused by the validator with its position
/// (the bounds came later), or accepted and through a few days.
#[test]
fn the_regression_corpus_is_refused_or_survives_its_days() {
    let corpus = Corpus::load();
    let files: Vec<_> = std::fs::read_dir(seeds::corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        match config::parse(&path, &text) {
            Ok(_) => {}
            Err(e) => {
                let shown = e.to_string();
                assert!(
                    shown.starts_with(&format!("{}:", path.display())),
                    "{shown}"
                );
                continue;
            }
        };
        for seed in 0..20 {
            let settings = config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            day::run(seed, &text, settings, &corpus.accepted);
        }
    }
}

#[test]
fn every_key_of_raw_rs_is_generated() {
    let raw = std::fs::read_to_string(seeds::root().join("src/config/raw.rs")).unwrap();
    // Each `Raw*` struct's fields, under the TOML name of its section.
    let sections = [
        ("RawDaemon", "daemon"),
        ("RawRestart", "restart"),
        ("RawWindow", "window"),
        ("RawUnit", "unit"),
        ("RawProbe", "unit.probe"),
        ("RawEmail", "email"),
    ];
    let mut missing = Vec::new();
    for (strukt, section) in sections {
        let start = raw
            .find(&format!("struct {strukt} {{"))
            .unwrap_or_else(|| panic!("{strukt} not in raw.rs"));
        let body = &raw[start..start + raw[start..].find("\n}").unwrap()];
        let fields = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub(super) "))
            .filter_map(|l| l.split(':').next());
        let table = generate::SECTIONS
            .iter()
            .find(|s| s.name == section)
            .unwrap();
        for field in fields {
            let generated = table.keys.iter().any(|(k, _)| *k == field)
                || (section == "unit"
                    && (field == "probe"
                        || generate::RESTART.keys.iter().any(|(k, _)| *k == field)));
            if !generated {
                missing.push(format!("{section}.{field}"));
            }
        }
    }
    // The top level: its sections.
    for (field, section) in [
        ("daemon", "daemon"),
        ("restart", "restart"),
        ("windows", "window"),
        ("units", "unit"),
        ("email", "email"),
        ("metrics", "metrics"),
        ("resources", "resources"),
    ] {
        assert!(
            raw.contains(&format!("pub(super) {field}:")),
            "RawConfig.{field} moved"
        );
        assert!(generate::SECTIONS.iter().any(|s| s.name == section));
    }
    assert!(
        missing.is_empty(),
        "keys of raw.rs the fuzzer never generates (add them to tests/fuzz/generate.rs): {missing:?}"
    );
}

#[test]
fn the_corpus_holds_the_shipped_configs_and_the_tests_configs() {
    let corpus = seeds::load();
    let shipped = std::fs::read_to_string(seeds::root().join("packaging/unitwarden.toml")).unwrap();
    assert!(corpus.contains(&shipped));
    assert!(
        corpus.iter().filter(|s| s.contains("[[unit]]")).count() >= 50,
        "the tests' config strings were not found"
    );
}
