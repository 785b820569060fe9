//! `splitscope trace`: a live, opensnoop-like view of file opens, as a table or as one JSON
//! object per line, with the agent's in-kernel filters.

use std::io::{BufWriter, ErrorKind, Write};

use anyhow::Context;
use chrono::{DateTime, Local, SecondsFormat};
use splitscope_probes::errno::errno_name;
use splitscope_probes::open_flags::{flag_names, format_flags};
use splitscope_probes::{OpenEvent, OpenResult, RecordKind};

use crate::agent::{DRAIN_INTERVAL, load_probe, probe_config};
use crate::cli::{TraceArgs, TraceOutput};

/// CLOCK_REALTIME − CLOCK_MONOTONIC, to turn the probe's monotonic timestamps into wall time.
fn realtime_offset_ns() -> i128 {
    let read = |clock| {
        // SAFETY: clock_gettime writes into the zeroed timespec.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}

fn wall_time(ts_ns: u64, offset: i128) -> DateTime<Local> {
    let ns = i128::from(ts_ns) + offset;
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = (ns % 1_000_000_000) as u32;
    DateTime::from_timestamp(secs, nanos)
        .unwrap_or_default()
        .with_timezone(&Local)
}

pub const TABLE_HEADER: &str =
    "TIME          PID     COMM             FD/ERR        FLAGS                    PATH";

/// One table row.
pub fn table_row(event: &OpenEvent, offset: i128) -> String {
    let result = match event.result() {
        OpenResult::Fd(fd) => fd.to_string(),
        OpenResult::Errno(e) => errno_name(e).map_or_else(|| format!("errno {e}"), str::to_owned),
    };
    let mut path = match event.filename() {
        Some(name) => String::from_utf8_lossy(name).into_owned(),
        None => "<not recorded>".to_owned(),
    };
    if event.filename_fault() {
        path = "<unreadable>".to_owned();
    } else if event.filename_truncated() {
        path.push('…');
    }
    format!(
        "{:<13} {:<7} {:<16} {:<13} {:<24} {}",
        event.ts_ns().map_or_else(
            || "-".to_owned(),
            |ts| wall_time(ts, offset).format("%H:%M:%S%.3f").to_string()
        ),
        event.pid(),
        String::from_utf8_lossy(event.comm()),
        result,
        event.flags().map_or_else(|| "-".to_owned(), format_flags),
        path
    )
}

/// One JSON line.
pub fn json_line(event: &OpenEvent, offset: i128) -> String {
    let (fd, errno, error) = match event.result() {
        OpenResult::Fd(fd) => (Some(fd), None, None),
        OpenResult::Errno(e) => (None, Some(e), errno_name(e)),
    };
    serde_json::json!({
        "time": event
            .ts_ns()
            .map(|ts| wall_time(ts, offset).to_rfc3339_opts(SecondsFormat::Micros, true)),
        "pid": event.pid(),
        "tid": event.tid(),
        "uid": event.uid(),
        "comm": String::from_utf8_lossy(event.comm()),
        "cgroup_id": event.cgroup_id(),
        "syscall": event.syscall().name(),
        "ret": event.ret(),
        "fd": fd,
        "errno": errno,
        "error": error,
        "flags": event.flags(),
        "flag_names": event.flags().map(flag_names),
        "mode": event.mode(),
        "path": event.filename().map(String::from_utf8_lossy),
        "path_truncated": event.filename_truncated(),
        "path_unreadable": event.filename_fault(),
    })
    .to_string()
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signal()?;
    let mut probe = load_probe(probe_config(&args.probe, RecordKind::Full)?).await?;
    let mut stream = probe.events(DRAIN_INTERVAL)?;
    let offset = realtime_offset_ns();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let render = |e: &OpenEvent| match args.output {
        TraceOutput::Table => table_row(e, offset),
        TraceOutput::Json => json_line(e, offset),
    };
    let result: anyhow::Result<()> = async {
        if args.output == TraceOutput::Table {
            writeln!(out, "{TABLE_HEADER}")?;
            out.flush()?;
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                event = stream.next() => {
                    let event = event.context("reading the probe's ring buffer")?;
                    writeln!(out, "{}", render(&event))?;
                    // Everything already in the ring goes out in one write.
                    while let Some(Ok(event)) = stream.try_next() {
                        writeln!(out, "{}", render(&event))?;
                    }
                    out.flush()?;
                }
            }
        }
    }
    .await;
    let dropped = probe.dropped().unwrap_or(0);
    probe.detach();
    if dropped > 0 {
        eprintln!("splitscope trace: {dropped} opens were dropped (ring buffer full; raise --ring-size)");
    }
    match result {
        // `splitscope trace | head` closes the pipe: that is the reader saying it is done.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitscope_probes::event::sample;

    #[test]
    fn table_rows_show_fd_or_errno_flags_and_path() {
        let mut raw = sample(4242, "cat", "/etc/hostname", 3);
        raw.detail.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u32;
        let row = table_row(&OpenEvent::from_full(raw), 0);
        assert!(
            row.contains("4242") && row.contains("cat") && row.contains("O_RDONLY|O_CLOEXEC"),
            "{row}"
        );
        assert!(row.ends_with("/etc/hostname"), "{row}");
        let failed = table_row(&OpenEvent::from_full(sample(1, "ls", "/nope", -2)), 0);
        assert!(failed.contains("ENOENT"), "{failed}");
    }

    #[test]
    fn json_lines_are_single_objects_with_every_field() {
        let line = json_line(&OpenEvent::from_full(sample(7, "vim", "/tmp/x", -13)), 0);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["pid"], 7);
        assert_eq!(v["comm"], "vim");
        assert_eq!(v["error"], "EACCES");
        assert_eq!(v["errno"], 13);
        assert_eq!(v["fd"], serde_json::Value::Null);
        assert_eq!(v["path"], "/tmp/x");
        assert_eq!(v["syscall"], "openat");
        assert_eq!(v["flag_names"][0], "O_RDONLY");
    }

    #[test]
    fn a_compact_record_shows_what_it_does_not_carry() {
        let event = OpenEvent::from_head(sample(7, "vim", "/tmp/x", 3).head);
        let row = table_row(&event, 0);
        assert!(row.ends_with("<not recorded>") && row.starts_with('-'), "{row}");
        let v: serde_json::Value = serde_json::from_str(&json_line(&event, 0)).unwrap();
        assert_eq!(
            (v["path"].clone(), v["flags"].clone()),
            (serde_json::Value::Null, serde_json::Value::Null)
        );
        assert_eq!(v["fd"], 3);
    }
}
