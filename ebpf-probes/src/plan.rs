//! Which attach points to try, in which order, and the walk that keeps the first one whose
//! start-up self-test sees opens.
//!
//! First, fexit on `do_sys_openat2` (a BPF trampoline, the way libbpf-tools prefer where the
//! kernel allows it): one program, handed each open's arguments and result together, called for
//! opens only. Unlike a kretprobe it follows any number of opens at once and goes through no
//! breakpoint, and unlike a syscall tracepoint it costs the node's other syscalls nothing. Kernels
//! without BPF trampolines (no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, or ones that refuse
//! fentry, as the CI machines' own does) refuse it when it is attached, and the walk goes on.
//! An explicit `--kprobe-target` asks for kprobes, so auto mode then leaves fexit out.
//!
//! Kprobe targets, in order of preference:
//! - `do_sys_openat2`: since Linux 5.6 every open(2), openat(2), creat(2) and openat2(2) passes
//!   through it (do_sys_open became a wrapper of it), so it sees all four.
//! - `do_sys_open`: the classic target, the only one before 5.6. On 5.6+ it never sees openat2(2),
//!   and where the compiler inlined it into the syscalls (Debian 6.1 and 6.12) a kprobe on it
//!   attaches and never fires; the self-test catches both and moves on.
//!
//! Then the syscall tracepoints `syscalls:sys_exit_<name>`, which every kernel with
//! CONFIG_FTRACE_SYSCALLS has. On request (`Tracepoints::RawFirst`, a benchmarking aid) the raw
//! `sys_exit` tracepoint goes before them: called without the perf record the per-syscall
//! tracepoints build, it costs an open less, but its program runs at every syscall's exit, which
//! costs every other syscall more (BENCHMARKS.md, "the tracepoint itself"). Nodes make far more
//! other syscalls than opens, so it is not the default.

use crate::facts::{FunctionFact, KernelFacts};

/// How the probe hooks the open path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Fexit where the kernel allows it, else kprobes on the function the kernel really runs,
    /// else the syscall tracepoints.
    #[default]
    Auto,
    /// Fexit only.
    Fentry,
    /// Kprobes only.
    Kprobe,
    /// Syscall tracepoints only.
    Tracepoint,
}

/// The function the fexit program is built for: every open passes through it (Linux >= 5.6).
pub const FEXIT_TARGET: &str = "do_sys_openat2";

/// The kprobe targets whose arguments the probe knows how to read, best first.
pub const KPROBE_TARGETS: &[&str] = &["do_sys_openat2", "do_sys_open"];

/// The raw tracepoint at every syscall's exit, as tracefs names it.
pub const RAW_SYS_EXIT: &str = "raw_syscalls:sys_exit";

/// Which syscall tracepoints tracepoint mode may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Tracepoints {
    /// Only `syscalls:sys_exit_<name>`.
    #[default]
    PerSyscall,
    /// The raw `sys_exit`, else the per-syscall ones (benchmarks compare the two).
    RawFirst,
}

/// The four open syscalls, as tracepoint name stems.
pub const OPEN_SYSCALLS: &[&str] = &["open", "openat", "openat2", "creat"];

/// One set of attach points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidate {
    /// fexit on this kernel function (a BPF trampoline).
    Fexit { function: &'static str },
    /// kprobe + kretprobe on this kernel function.
    Kprobe { function: String },
    /// The raw tracepoint `raw_syscalls:sys_exit` (a `tp_btf` program), picking out these
    /// syscalls by number.
    RawSysExit { syscalls: Vec<&'static str> },
    /// `syscalls:sys_exit_<name>` (and `sys_enter_<name>` where needed) for these syscalls.
    Tracepoints { syscalls: Vec<&'static str> },
}

impl Candidate {
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Fexit { .. } => "fentry",
            Self::Kprobe { .. } => "kprobe",
            Self::RawSysExit { .. } | Self::Tracepoints { .. } => "tracepoint",
        }
    }

    /// The `target` label: the traced function, or the tracepoints.
    pub fn target(&self) -> String {
        match self {
            Self::Fexit { function } => (*function).to_owned(),
            Self::Kprobe { function } => function.clone(),
            Self::RawSysExit { .. } => RAW_SYS_EXIT.to_owned(),
            Self::Tracepoints { syscalls } => syscalls
                .iter()
                .map(|s| format!("syscalls:sys_exit_{s}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fexit { function } => write!(f, "fexit {function}"),
            Self::Kprobe { function } => write!(f, "kprobe {function}"),
            Self::RawSysExit { .. } => write!(f, "raw tracepoint {RAW_SYS_EXIT}"),
            Self::Tracepoints { .. } => write!(f, "tracepoints {}", self.target()),
        }
    }
}

/// The ordered candidates, and why others were left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "this kernel has no kprobes (no {pmu}; CONFIG_KPROBES is not set): use --attach tracepoint, \
         or --attach auto to fall back to the syscall tracepoints"
    )]
    NoKprobes { pmu: &'static str },
    #[error(
        "--kprobe-target {target}: the probe reads the arguments of {} only",
        KPROBE_TARGETS.join(" and ")
    )]
    UnsupportedTarget { target: String },
    #[error(
        "no fexit target in this kernel: {FEXIT_TARGET} is not in it (Linux < 5.6): use --attach auto \
         to fall back to kprobes or the syscall tracepoints"
    )]
    NoFexitTarget,
    #[error("--kprobe-target {target}: no such function in this kernel (not in /proc/kallsyms)")]
    TargetAbsent { target: String },
    #[error("no kprobe target in this kernel: neither {} exists", KPROBE_TARGETS.join(" nor "))]
    NoKprobeTarget,
    #[error(
        "no syscall tracepoints (syscalls:sys_exit_openat missing under tracefs events/): the kernel \
         lacks CONFIG_FTRACE_SYSCALLS, or tracefs is not mounted"
    )]
    NoTracepoints,
    #[error("nothing to attach to: {}", .skipped.join("; "))]
    Nothing { skipped: Vec<String> },
}

/// Decides the candidates for `mode` from the kernel's facts.
pub fn plan(
    mode: AttachMode,
    kprobe_target: Option<&str>,
    tracepoints: Tracepoints,
    facts: &dyn KernelFacts,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    if let Some(target) = kprobe_target
        && !KPROBE_TARGETS.contains(&target)
    {
        return Err(PlanError::UnsupportedTarget {
            target: target.to_owned(),
        });
    }

    if mode == AttachMode::Fentry || (mode == AttachMode::Auto && kprobe_target.is_none()) {
        // Whether the kernel allows BPF trampolines shows only when one is loaded.
        if facts.has_fexit_target() {
            plan.candidates.push(Candidate::Fexit {
                function: FEXIT_TARGET,
            });
        } else if mode == AttachMode::Fentry {
            return Err(PlanError::NoFexitTarget);
        } else {
            plan.skipped
                .push(format!("fexit {FEXIT_TARGET}: not in this kernel"));
        }
    } else if mode == AttachMode::Auto {
        plan.skipped
            .push(format!("fexit {FEXIT_TARGET}: --kprobe-target asks for kprobes"));
    }
    if mode == AttachMode::Fentry
        && let Some(target) = kprobe_target
    {
        plan.skipped.push(format!(
            "--kprobe-target {target}: fentry mode attaches no kprobes"
        ));
    }

    if matches!(mode, AttachMode::Auto | AttachMode::Kprobe) {
        if !facts.has_kprobe_pmu() {
            if mode == AttachMode::Kprobe {
                return Err(PlanError::NoKprobes {
                    pmu: crate::facts::KPROBE_PMU_TYPE,
                });
            }
            plan.skipped
                .push("kprobes: this kernel has no kprobe PMU (CONFIG_KPROBES unset)".into());
        } else {
            // An explicit target goes first; in auto mode the other known targets follow it.
            let order: Vec<&str> = match (kprobe_target, mode) {
                (Some(t), AttachMode::Kprobe) => vec![t],
                (Some(t), _) => std::iter::once(t)
                    .chain(KPROBE_TARGETS.iter().copied().filter(|k| *k != t))
                    .collect(),
                (None, _) => KPROBE_TARGETS.to_vec(),
            };
            for function in order {
                match facts.function(function) {
                    FunctionFact::Traceable | FunctionFact::InKallsyms => {
                        plan.candidates.push(Candidate::Kprobe {
                            function: function.to_owned(),
                        })
                    }
                    FunctionFact::Absent => {
                        if kprobe_target == Some(function) && mode == AttachMode::Kprobe {
                            return Err(PlanError::TargetAbsent {
                                target: function.to_owned(),
                            });
                        }
                        plan.skipped
                            .push(format!("kprobe {function}: not in this kernel"));
                    }
                }
            }
            if mode == AttachMode::Kprobe && plan.candidates.is_empty() {
                return Err(PlanError::NoKprobeTarget);
            }
        }
    }

    if matches!(mode, AttachMode::Auto | AttachMode::Tracepoint) {
        let syscalls: Vec<&'static str> = OPEN_SYSCALLS
            .iter()
            .copied()
            .filter(|s| facts.has_tracepoint("syscalls", &format!("sys_exit_{s}")))
            .collect();
        if syscalls.contains(&"openat") {
            // The syscall events tell that the kernel traces syscalls (CONFIG_FTRACE_SYSCALLS),
            // and which of the open syscalls it has, for the self-test to try.
            if tracepoints == Tracepoints::RawFirst {
                plan.candidates.push(Candidate::RawSysExit {
                    syscalls: syscalls.clone(),
                });
            }
            plan.candidates.push(Candidate::Tracepoints { syscalls });
        } else if mode == AttachMode::Tracepoint {
            return Err(PlanError::NoTracepoints);
        } else {
            plan.skipped.push(PlanError::NoTracepoints.to_string());
        }
    }

    if plan.candidates.is_empty() {
        return Err(PlanError::Nothing {
            skipped: plan.skipped,
        });
    }
    Ok(plan)
}

/// What the start-up self-test saw for one candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// Every test open was reported.
    Passed,
    /// These syscalls' test opens were never reported.
    Missed(Vec<&'static str>),
}

/// One candidate tried at start-up and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub candidate: Candidate,
    pub outcome: String,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.candidate, self.outcome)
    }
}

/// Attaches candidates and runs the self-test: the side-effecting half of the walk, faked in tests.
pub trait Attacher {
    type Error: std::fmt::Display;
    fn attach(&mut self, candidate: &Candidate) -> Result<(), Self::Error>;
    fn self_test(&mut self, candidate: &Candidate) -> Result<SelfTest, Self::Error>;
    fn detach(&mut self, candidate: &Candidate);
}

/// Tries the candidates in order and keeps the first whose self-test passes. Returns it with
/// the attempts before it, or every attempt when none passed.
pub fn choose<A: Attacher>(plan: &Plan, attacher: &mut A) -> Result<(Candidate, Vec<Attempt>), Vec<Attempt>> {
    let mut attempts = Vec::new();
    for candidate in &plan.candidates {
        let outcome = match attacher.attach(candidate) {
            Err(err) => format!("could not attach: {err}"),
            Ok(()) => match attacher.self_test(candidate) {
                Ok(SelfTest::Passed) => return Ok((candidate.clone(), attempts)),
                Ok(SelfTest::Missed(missed)) => {
                    attacher.detach(candidate);
                    let why = match candidate {
                        Candidate::Kprobe { function } => format!(
                            " ({function} is not on this kernel's path for them, e.g. inlined into \
                             the syscalls)"
                        ),
                        Candidate::Fexit { function } => {
                            format!(" ({function} is not on this kernel's path for them)")
                        }
                        Candidate::RawSysExit { .. } | Candidate::Tracepoints { .. } => String::new(),
                    };
                    format!(
                        "attached but never fired for the test {}{why}",
                        missed
                            .iter()
                            .map(|s| format!("{s}(2)"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                Err(err) => {
                    attacher.detach(candidate);
                    format!("self-test failed: {err}")
                }
            },
        };
        attempts.push(Attempt {
            candidate: candidate.clone(),
            outcome,
        });
    }
    Err(attempts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeKernel {
        kprobes: bool,
        functions: HashMap<&'static str, FunctionFact>,
        tracepoints: Vec<&'static str>,
    }

    impl FakeKernel {
        /// Debian 6.1/6.12: kprobes, do_sys_open still a symbol (inlined at its call sites).
        fn debian() -> Self {
            Self {
                kprobes: true,
                functions: HashMap::from([
                    ("do_sys_open", FunctionFact::Traceable),
                    ("do_sys_openat2", FunctionFact::Traceable),
                ]),
                tracepoints: vec!["open", "openat", "openat2", "creat"],
            }
        }
        /// This CI machine: no kprobes, syscall tracepoints.
        fn no_kprobes() -> Self {
            Self {
                kprobes: false,
                tracepoints: vec!["open", "openat", "openat2", "creat"],
                ..Self::default()
            }
        }
        /// A 5.4 kernel: do_sys_open only, no openat2.
        fn old() -> Self {
            Self {
                kprobes: true,
                functions: HashMap::from([("do_sys_open", FunctionFact::Traceable)]),
                tracepoints: vec!["open", "openat", "creat"],
            }
        }
    }

    impl KernelFacts for FakeKernel {
        fn has_kprobe_pmu(&self) -> bool {
            self.kprobes
        }
        fn function(&self, name: &str) -> FunctionFact {
            self.functions.get(name).copied().unwrap_or(FunctionFact::Absent)
        }
        fn has_fexit_target(&self) -> bool {
            self.function("do_sys_openat2") != FunctionFact::Absent
        }
        fn has_tracepoint(&self, category: &str, name: &str) -> bool {
            category == "syscalls"
                && self
                    .tracepoints
                    .iter()
                    .any(|s| name.strip_prefix("sys_exit_") == Some(s))
        }
    }

    /// The plan with the default tracepoints (the per-syscall ones).
    fn plan_of(mode: AttachMode, target: Option<&str>, kernel: &FakeKernel) -> Result<Plan, PlanError> {
        plan(mode, target, Tracepoints::default(), kernel)
    }

    fn kprobe(f: &str) -> Candidate {
        Candidate::Kprobe { function: f.into() }
    }
    fn fexit() -> Candidate {
        Candidate::Fexit {
            function: "do_sys_openat2",
        }
    }
    fn all_tracepoints() -> Candidate {
        Candidate::Tracepoints {
            syscalls: vec!["open", "openat", "openat2", "creat"],
        }
    }
    fn raw_sys_exit() -> Candidate {
        Candidate::RawSysExit {
            syscalls: vec!["open", "openat", "openat2", "creat"],
        }
    }

    #[test]
    fn auto_prefers_fexit_then_do_sys_openat2_then_do_sys_open_then_tracepoints() {
        let plan = plan_of(AttachMode::Auto, None, &FakeKernel::debian()).unwrap();
        assert_eq!(
            plan.candidates,
            vec![
                fexit(),
                kprobe("do_sys_openat2"),
                kprobe("do_sys_open"),
                all_tracepoints()
            ]
        );
        assert_eq!(fexit().mode(), "fentry");
        assert_eq!(fexit().target(), "do_sys_openat2");
    }

    #[test]
    fn auto_without_kprobes_tries_fexit_then_tracepoints_and_says_why() {
        // This CI machine: Linux 6.18, so do_sys_openat2 is there.
        let kernel = FakeKernel {
            functions: HashMap::from([("do_sys_openat2", FunctionFact::InKallsyms)]),
            ..FakeKernel::no_kprobes()
        };
        let plan = plan_of(AttachMode::Auto, None, &kernel).unwrap();
        assert_eq!(plan.candidates, vec![fexit(), all_tracepoints()]);
        assert!(plan.skipped[0].contains("no kprobe PMU"), "{:?}", plan.skipped);
    }

    #[test]
    fn fentry_mode_plans_fexit_alone_and_names_a_kernel_without_its_target() {
        let plan = plan_of(AttachMode::Fentry, None, &FakeKernel::debian()).unwrap();
        assert_eq!(plan.candidates, vec![fexit()]);
        // A kprobe target does not turn fentry mode into kprobes, and the plan says so.
        let plan = plan_of(AttachMode::Fentry, Some("do_sys_open"), &FakeKernel::debian()).unwrap();
        assert_eq!(plan.candidates, vec![fexit()]);
        assert_eq!(
            plan.skipped,
            vec!["--kprobe-target do_sys_open: fentry mode attaches no kprobes".to_string()]
        );
        let err = plan_of(AttachMode::Fentry, None, &FakeKernel::old()).unwrap_err();
        assert_eq!(err, PlanError::NoFexitTarget);
        assert!(err.to_string().contains("do_sys_openat2"), "{err}");
    }

    #[test]
    fn a_kernel_that_refuses_fexit_gets_kprobes() {
        let plan = plan_of(AttachMode::Auto, None, &FakeKernel::debian()).unwrap();
        let mut fake = FakeAttacher::new(vec!["fexit do_sys_openat2"], vec![]);
        let (chosen, attempts) = choose(&plan, &mut fake).unwrap();
        assert_eq!(chosen, kprobe("do_sys_openat2"));
        assert_eq!(attempts.len(), 1);
        assert!(
            attempts[0]
                .to_string()
                .starts_with("fexit do_sys_openat2: could not attach")
        );
    }

    #[test]
    fn old_kernel_uses_do_sys_open_and_the_tracepoints_it_has() {
        let plan = plan_of(AttachMode::Auto, None, &FakeKernel::old()).unwrap();
        assert_eq!(
            plan.candidates,
            vec![
                kprobe("do_sys_open"),
                Candidate::Tracepoints {
                    syscalls: vec!["open", "openat", "creat"]
                }
            ]
        );
        assert!(
            plan.skipped
                .iter()
                .any(|s| s == "kprobe do_sys_openat2: not in this kernel")
        );
        assert!(
            plan.skipped
                .iter()
                .any(|s| s == "fexit do_sys_openat2: not in this kernel")
        );
    }

    #[test]
    fn forced_kprobe_without_kprobes_names_the_missing_pmu() {
        let err = plan_of(AttachMode::Kprobe, None, &FakeKernel::no_kprobes()).unwrap_err();
        assert!(matches!(err, PlanError::NoKprobes { .. }));
        assert!(err.to_string().contains("CONFIG_KPROBES"), "{err}");
    }

    #[test]
    fn forced_kprobe_target_is_the_only_candidate() {
        let plan = plan_of(AttachMode::Kprobe, Some("do_sys_open"), &FakeKernel::debian()).unwrap();
        assert_eq!(plan.candidates, vec![kprobe("do_sys_open")]);
    }

    #[test]
    fn target_in_auto_mode_goes_first_then_the_others_and_fexit_is_left_out() {
        let plan = plan_of(AttachMode::Auto, Some("do_sys_open"), &FakeKernel::debian()).unwrap();
        assert_eq!(
            plan.candidates,
            vec![kprobe("do_sys_open"), kprobe("do_sys_openat2"), all_tracepoints()]
        );
        assert!(
            plan.skipped
                .iter()
                .any(|s| s.contains("fexit do_sys_openat2: --kprobe-target")),
            "{:?}",
            plan.skipped
        );
    }

    #[test]
    fn unknown_and_absent_targets_are_named() {
        let err = plan_of(AttachMode::Auto, Some("vfs_open"), &FakeKernel::debian()).unwrap_err();
        assert!(err.to_string().contains("vfs_open") && err.to_string().contains("do_sys_openat2"));
        let err = plan_of(AttachMode::Kprobe, Some("do_sys_openat2"), &FakeKernel::old()).unwrap_err();
        assert_eq!(
            err,
            PlanError::TargetAbsent {
                target: "do_sys_openat2".into()
            }
        );
    }

    #[test]
    fn tracepoint_mode_never_plans_kprobes_and_fails_without_tracepoints() {
        let plan_tp = plan_of(AttachMode::Tracepoint, None, &FakeKernel::debian()).unwrap();
        assert_eq!(plan_tp.candidates, vec![all_tracepoints()]);
        let bare = FakeKernel {
            kprobes: true,
            ..FakeKernel::default()
        };
        assert_eq!(
            plan_of(AttachMode::Tracepoint, None, &bare),
            Err(PlanError::NoTracepoints)
        );
        assert!(matches!(
            plan_of(AttachMode::Auto, None, &bare),
            Err(PlanError::Nothing { .. })
        ));
    }

    /// A kernel where the probes that attach fire or not as scripted.
    struct FakeAttacher {
        refuses: Vec<&'static str>,
        silent: Vec<(&'static str, Vec<&'static str>)>,
        attached: Vec<String>,
        log: Vec<String>,
    }

    impl FakeAttacher {
        /// Refuses to attach the candidates named in `refuses`; those in `silent` attach but
        /// miss the test opens of the listed syscalls.
        fn new(refuses: Vec<&'static str>, silent: Vec<(&'static str, Vec<&'static str>)>) -> Self {
            Self {
                refuses,
                silent,
                attached: vec![],
                log: vec![],
            }
        }
    }

    impl Attacher for FakeAttacher {
        type Error = String;
        fn attach(&mut self, c: &Candidate) -> Result<(), String> {
            self.log.push(format!("attach {c}"));
            if self.refuses.iter().any(|r| c.to_string() == *r) {
                return Err("EINVAL".into());
            }
            self.attached.push(c.to_string());
            Ok(())
        }
        fn self_test(&mut self, c: &Candidate) -> Result<SelfTest, String> {
            Ok(
                match self.silent.iter().find(|(name, _)| c.to_string() == *name) {
                    Some((_, missed)) => SelfTest::Missed(missed.clone()),
                    None => SelfTest::Passed,
                },
            )
        }
        fn detach(&mut self, c: &Candidate) {
            self.log.push(format!("detach {c}"));
            self.attached.retain(|a| *a != c.to_string());
        }
    }

    #[test]
    fn self_test_moves_past_an_inlined_do_sys_open_to_do_sys_openat2() {
        let plan = plan_of(AttachMode::Auto, Some("do_sys_open"), &FakeKernel::debian()).unwrap();
        let mut fake = FakeAttacher::new(
            vec![],
            vec![("kprobe do_sys_open", vec!["open", "openat", "openat2", "creat"])],
        );
        let (chosen, attempts) = choose(&plan, &mut fake).unwrap();
        assert_eq!(chosen, kprobe("do_sys_openat2"));
        assert_eq!(attempts.len(), 1);
        assert!(attempts[0].outcome.contains("never fired"), "{}", attempts[0]);
        assert!(attempts[0].outcome.contains("inlined"), "{}", attempts[0]);
        // The silent probe was detached before the next one was attached.
        assert_eq!(fake.attached, vec!["kprobe do_sys_openat2".to_string()]);
        assert_eq!(fake.log[1], "detach kprobe do_sys_open");
    }

    #[test]
    fn self_test_falls_back_to_tracepoints_when_no_kprobe_fires() {
        let plan = plan_of(AttachMode::Auto, None, &FakeKernel::debian()).unwrap();
        let mut fake = FakeAttacher::new(
            vec!["fexit do_sys_openat2", "kprobe do_sys_openat2"],
            vec![("kprobe do_sys_open", vec!["openat2"])],
        );
        let (chosen, attempts) = choose(&plan, &mut fake).unwrap();
        assert_eq!(chosen, all_tracepoints());
        assert_eq!(attempts.len(), 3);
        assert!(attempts[1].outcome.contains("could not attach: EINVAL"));
        assert!(attempts[2].outcome.contains("openat2(2)"));
    }

    #[test]
    fn a_kernel_that_refuses_the_raw_tracepoint_gets_the_per_syscall_ones() {
        // Before 5.11 the raw program's bpf_get_current_task_btf does not load.
        let plan = plan(
            AttachMode::Tracepoint,
            None,
            Tracepoints::RawFirst,
            &FakeKernel::old(),
        )
        .unwrap();
        let mut fake = FakeAttacher::new(vec!["raw tracepoint raw_syscalls:sys_exit"], vec![]);
        let (chosen, attempts) = choose(&plan, &mut fake).unwrap();
        assert_eq!(
            chosen,
            Candidate::Tracepoints {
                syscalls: vec!["open", "openat", "creat"]
            }
        );
        assert_eq!(attempts.len(), 1);
        assert!(
            attempts[0].outcome.contains("could not attach"),
            "{}",
            attempts[0]
        );
    }

    #[test]
    fn the_raw_tracepoint_goes_before_the_per_syscall_ones_only_on_request() {
        let plan = plan(
            AttachMode::Auto,
            None,
            Tracepoints::RawFirst,
            &FakeKernel::debian(),
        )
        .unwrap();
        assert_eq!(
            plan.candidates,
            vec![
                fexit(),
                kprobe("do_sys_openat2"),
                kprobe("do_sys_open"),
                raw_sys_exit(),
                all_tracepoints()
            ]
        );
        // Its records and metrics say tracepoint mode, and which tracepoint.
        assert_eq!(raw_sys_exit().mode(), "tracepoint");
        assert_eq!(raw_sys_exit().target(), "raw_syscalls:sys_exit");
    }

    #[test]
    fn every_failure_is_reported_when_nothing_passes() {
        let plan = plan_of(AttachMode::Kprobe, Some("do_sys_open"), &FakeKernel::debian()).unwrap();
        let mut fake = FakeAttacher::new(vec![], vec![("kprobe do_sys_open", vec!["openat"])]);
        let attempts = choose(&plan, &mut fake).unwrap_err();
        assert_eq!(attempts.len(), 1);
        assert!(fake.attached.is_empty());
    }
}
