//! Who holds work. A worker — one billrun process — signs its claims on accounts and outbox
//! messages with its name: host, process id, the process's start time and its pid namespace.
//! From such a name this module tells whether that worker is certainly gone, so its claims
//! can be taken over at once instead of waiting out their lease.
//!
//! The rule is one-sided on purpose: only a worker *on this host and in this pid namespace*
//! whose process no longer exists, or whose pid now belongs to a process started at another
//! time (a reused pid), is gone. Anything else — another host, another container, a name
//! from an older billrun, a system without `/proc` — is `Unknown`, and its claims are left to
//! their lease (or, on PostgreSQL, to the check of the worker's database session). Taking a
//! live worker's claims early never happens by this rule.

/// Whether the worker a claim names is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its process runs on this host.
    Alive,
    /// Its process is gone (or its pid was reused): its claims can be taken now.
    Gone,
    /// Cannot be told from here.
    Unknown,
}

/// A worker name's parts: `host:pid:start:pidns`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WorkerName<'a> {
    host: &'a str,
    pid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22).
    start: u64,
    /// The pid namespace's inode (`/proc/PID/ns/pid`): pids mean something only inside one.
    namespace: u64,
}

impl<'a> WorkerName<'a> {
    fn parse(name: &'a str) -> Option<WorkerName<'a>> {
        // The host may hold colons (an IPv6 literal, in principle): the last three fields
        // are numbers.
        let mut parts = name.rsplitn(4, ':');
        let namespace = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let host = parts.next()?;
        Some(WorkerName {
            host,
            pid,
            start,
            namespace,
        })
    }
}

/// What `/proc` says about a process, as far as this module needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessFacts {
    pub start: u64,
    pub namespace: u64,
}

/// This host's name, as claims carry it.
fn host_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        "billrun".into()
    } else {
        host
    }
}

/// The start time and pid namespace of process `pid`, or `None` if it does not exist (or
/// this system has no `/proc`).
fn process_facts(pid: &str) -> Option<ProcessFacts> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; the start time is field 22.
    let start = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    // "pid:[4026531836]"
    let namespace = ns
        .to_str()?
        .trim_start_matches("pid:[")
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(ProcessFacts { start, namespace })
}

/// This process's worker name: `host:pid:start:pidns`, or `host:pid` where `/proc` is
/// missing (claims by such a name are only ever taken over when their lease ends).
pub fn name() -> String {
    let pid = std::process::id();
    match process_facts("self") {
        Some(f) => format!("{}:{pid}:{}:{}", host_name(), f.start, f.namespace),
        None => format!("{}:{pid}", host_name()),
    }
}

/// Whether the worker `name` names is alive, seen from this process.
pub fn liveness(name: &str) -> Liveness {
    let Some(me) = process_facts("self") else {
        return Liveness::Unknown;
    };
    judge(name, &host_name(), me.namespace, |pid| {
        process_facts(&pid.to_string())
    })
}

/// Certainly gone: its database session is (`session_gone`), or its process on this host.
pub fn is_gone(name: &str, session_gone: bool) -> bool {
    session_gone || liveness(name) == Liveness::Gone
}

/// The rule, over what `/proc` says (`facts` of a pid, `None` when no such process).
fn judge(
    name: &str,
    host: &str,
    namespace: u64,
    facts: impl Fn(u32) -> Option<ProcessFacts>,
) -> Liveness {
    let Some(w) = WorkerName::parse(name) else {
        return Liveness::Unknown;
    };
    if w.host != host || w.namespace != namespace {
        return Liveness::Unknown;
    }
    match facts(w.pid) {
        None => Liveness::Gone,
        Some(f) if f.start != w.start => Liveness::Gone,
        // The same pid started at the same tick: the same process, unless it moved into
        // another namespace (it cannot).
        Some(_) => Liveness::Alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(start: u64) -> impl Fn(u32) -> Option<ProcessFacts> {
        move |pid| {
            (pid == 42).then_some(ProcessFacts {
                start,
                namespace: 7,
            })
        }
    }

    #[test]
    fn a_live_worker_is_alive_a_dead_or_reused_pid_is_gone() {
        let cases = [
            // (name, start of pid 42 now, expected)
            ("h:42:1000:7", 1000, Liveness::Alive),
            ("h:42:1000:7", 2000, Liveness::Gone),
            ("h:43:1000:7", 1000, Liveness::Gone),
            ("other:43:1000:7", 1000, Liveness::Unknown),
            ("h:43:1000:8", 1000, Liveness::Unknown),
            ("h:43", 1000, Liveness::Unknown),
            ("simulator", 1000, Liveness::Unknown),
            ("fe80::1:43:1000:7", 1000, Liveness::Unknown),
        ];
        for (name, start, expected) in cases {
            assert_eq!(judge(name, "h", 7, facts(start)), expected, "{name}");
        }
        assert_eq!(
            judge("fe80::1:43:1000:7", "fe80::1", 7, facts(1)),
            Liveness::Gone
        );
    }

    #[test]
    fn this_process_is_alive_and_a_finished_child_is_gone() {
        if process_facts("self").is_none() {
            return; // no /proc: every name is Unknown, which the rule above covers
        }
        assert_eq!(liveness(&name()), Liveness::Alive);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let f = process_facts(&pid.to_string());
        child.wait().unwrap();
        if let Some(f) = f {
            let dead = format!("{}:{pid}:{}:{}", host_name(), f.start, f.namespace);
            assert_eq!(liveness(&dead), Liveness::Gone);
        }
    }
}
