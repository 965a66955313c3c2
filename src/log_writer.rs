//! Where the log goes: stderr, written by one thread of its own.
//!
//! A request's log line costs the request a channel send, not a system call: the writer
//! thread takes every line waiting when it wakes and writes them with one `write`, so a busy
//! mirror writes many lines per call (and is not woken by each) and an idle one each line at
//! once. The channel is
//! bounded ([`QUEUE`] lines): a log that cannot keep up slows the lines' senders rather than
//! growing without bound. [`flush`] waits until every line sent so far is written (the binary
//! calls it before it exits).
//!
//! [`plain_info`] writes a line in the subscriber's own plain format without going through its
//! formatter: what the request log line of every answer uses (the formatter cost a manifest hit
//! a quarter of its time).

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::OnceLock;

/// Lines the channel holds before a sender waits.
const QUEUE: usize = 16 * 1024;
/// How long a busy log gathers lines before its next write.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);
/// The most bytes gathered into one write.
const BATCH: usize = 256 * 1024;

enum Message {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The writer the tracing subscriber is given: each event's text goes to the log thread.
#[derive(Clone)]
pub struct LogWriter {
    queue: SyncSender<Message>,
}

static WRITER: OnceLock<LogWriter> = OnceLock::new();
/// Set when the subscriber writes plain text (no colours) through [`WRITER`].
static PLAIN: OnceLock<LogWriter> = OnceLock::new();

/// Says the subscriber writes plain text through `writer`: [`plain_info`] may then write.
pub fn set_plain(writer: &LogWriter) {
    let _ = PLAIN.set(writer.clone());
}

/// Writes `timestamp  INFO ` and what `fields` writes (it ends the line), as the subscriber's
/// plain format would. False when the subscriber is not plain: the caller logs through
/// `tracing` instead. The caller checks that its INFO lines are enabled.
pub fn plain_info(fields: impl FnOnce(&mut Vec<u8>)) -> bool {
    let Some(w) = PLAIN.get() else {
        return false;
    };
    let mut line = Vec::with_capacity(192);
    timestamp(std::time::SystemTime::now(), &mut line);
    line.extend_from_slice(b"  INFO ");
    fields(&mut line);
    let _ = w.queue.send(Message::Line(line));
    true
}

/// `now` as RFC 3339 in UTC with microseconds (`2026-12-06T09:47:28.888371Z`), the
/// subscriber's format.
fn timestamp(now: std::time::SystemTime, out: &mut Vec<u8>) {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_date(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        since.subsec_micros()
    );
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01.
fn civil_date(days: i64) -> (i64, u32, u32) {
    // Counted from 0000-03-01, so that a leap day ends a year; eras of 400 years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The process's log writer (its thread starts on first use).
pub fn stderr() -> LogWriter {
    WRITER
        .get_or_init(|| {
            let (queue, lines) = sync_channel(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("acr-log".into())
                .spawn(move || write_lines(lines, std::io::stderr()));
            if let Err(e) = spawned {
                eprintln!("warning: no log thread ({e}); log lines are dropped");
            }
            LogWriter { queue }
        })
        .clone()
}

/// Waits until every line sent so far is written (at most one second).
pub fn flush() {
    if let Some(w) = WRITER.get() {
        let (done, wait) = sync_channel(1);
        if w.queue.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(1));
        }
    }
}

fn write_lines(lines: Receiver<Message>, mut out: impl Write) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut acks = Vec::new();
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        let mut count = 0;
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Flush(ack) => acks.push(ack),
            }
            count += 1;
            if batch.len() < BATCH {
                next = lines.try_recv().ok();
            }
        }
        // A log that cannot be written has nowhere to say so.
        let _ = out.write_all(&batch);
        let _ = out.flush();
        batch.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        // Busy (lines came while the last ones were written): gather for a moment rather than
        // be woken by every line; an idle log writes its next line at once.
        if count > 1 {
            std::thread::sleep(GATHER);
        }
    }
}

/// One event's text, sent as one line when the subscriber drops it.
pub struct Line {
    text: Vec<u8>,
    queue: SyncSender<Message>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.text.is_empty() {
            let _ = self
                .queue
                .send(Message::Line(std::mem::take(&mut self.text)));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            text: Vec::with_capacity(256),
            queue: self.queue.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn timestamps_are_the_subscribers_rfc_3339() {
        let at = |secs: u64, micros: u64| {
            let mut out = Vec::new();
            timestamp(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(secs * 1_000_000 + micros),
                &mut out,
            );
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
        assert_eq!(at(1_796_549_248, 888_371), "2026-12-06T09:27:28.888371Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
        // Every day of four centuries agrees with counting days one by one.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..146_097 {
            assert_eq!(civil_date(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[m as usize - 1] {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_a_flush_waits_for_them() {
        let (queue, lines) = sync_channel(4);
        let out = Shared::default();
        let sink = out.clone();
        let thread = std::thread::spawn(move || write_lines(lines, sink));
        let writer = LogWriter {
            queue: queue.clone(),
        };
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
                        write!(line, "thread {t} ").unwrap();
                        writeln!(line, "line {i}").unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        let (done, wait) = sync_channel(1);
        queue.send(Message::Flush(done)).unwrap();
        wait.recv().unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000);
        for t in 0..4 {
            let own: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..500).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(own, expected);
        }
        drop((queue, writer));
        thread.join().unwrap();
    }
}
