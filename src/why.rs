//! WHY A START FAILED: the server's own error, found in what it reported
//! over the ready socket (our launcher, the warm child: `_report.py`) or in
//! what it wrote to its error log. Pure text handling, no I/O.
//!
//! A report is one datagram on the ready socket, a JSON object (`Report`,
//! serde): `ready` once a process serves, or `failed` with TEXT when a
//! process of the launch failed before serving, TEXT being its error
//! records and traceback as its stderr would show them. Python never
//! writes one itself: `_launch.py` and `_report.py` get the bytes from
//! `_core.ready_report` / `_core.failed_report` (`Report::to_datagram`).

use serde::{Deserialize, Serialize};

/// About the most of a failure's text a report carries (bytes, as JSON
/// encodes it): `Report::to_datagram` keeps the end of a longer text
/// (where the exception line is).
pub const REPORT_LIMIT: usize = 16 * 1024;

/// The largest datagram a report takes (bytes): the text's limit and room
/// for the rest of the object.
pub const DATAGRAM_LIMIT: usize = REPORT_LIMIT + 256;

/// One message from a process of a launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// The process finished uvicorn's startup and serves.
    Ready { launch: String, pid: i32 },
    /// The process failed before serving; `text` is its error output.
    Failed {
        launch: String,
        pid: i32,
        text: String,
    },
}

impl Report {
    /// Parses a datagram; None for anything else.
    pub fn parse(msg: &[u8]) -> Option<Report> {
        serde_json::from_slice(msg).ok()
    }

    /// The datagram for this report: at most `DATAGRAM_LIMIT` bytes, a
    /// failure's text cut to its end (where the exception line is) when
    /// it is longer than `REPORT_LIMIT` encoded.
    pub fn to_datagram(&self) -> Vec<u8> {
        let Report::Failed { launch, pid, text } = self else {
            // Plain fields: serialization cannot fail.
            return serde_json::to_vec(self).unwrap_or_default();
        };
        // What the rest takes, then as much of the text's end as fits.
        let mut cut = Report::Failed {
            launch: launch.clone(),
            pid: *pid,
            text: String::new(),
        };
        let room = DATAGRAM_LIMIT.saturating_sub(json_len(&cut));
        let mut used = 0;
        let start = text
            .char_indices()
            .rev()
            .take_while(|(_, c)| {
                used += escaped_len(*c);
                used <= room
            })
            .last()
            .map_or(text.len(), |(i, _)| i);
        if let Report::Failed { text: kept, .. } = &mut cut {
            *kept = text[start..].to_owned();
        }
        serde_json::to_vec(&cut).unwrap_or_default()
    }

    /// The launch it came from.
    pub fn launch(&self) -> &str {
        match self {
            Report::Ready { launch, .. } | Report::Failed { launch, .. } => launch,
        }
    }
}

fn json_len(report: &Report) -> usize {
    serde_json::to_vec(report).map_or(0, |v| v.len())
}

/// The bytes `c` takes in a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// uvicorn's lines that follow the real error and say nothing of it.
const FOLLOW_ONS: &[&str] = &[
    "Application startup failed. Exiting.",
    "Child process [",
    "Stopping parent process",
    "Started parent process",
    "Waiting for ",
    "Finished server process",
    "Terminated child process",
];

/// A log line without uvicorn's level prefix (`ERROR:    `).
pub fn unprefixed(line: &str) -> &str {
    for level in ["CRITICAL:", "ERROR:", "WARNING:", "INFO:", "DEBUG:"] {
        if let Some(rest) = line.strip_prefix(level) {
            return rest.trim_start();
        }
    }
    line
}

/// The server's own error in `text` (a report, or the tail of its error
/// log): the exception line of the last traceback (`RuntimeError: boom`),
/// else the last error line that is not one of uvicorn's follow-ons
/// ("Application startup failed. Exiting."), else the last line.
pub fn reason(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    if let Some(at) = lines
        .iter()
        .rposition(|l| l.contains("Traceback (most recent call last):"))
    {
        // Frames are indented; the first line after them that is not is
        // the exception (its first line, for a message of several).
        if let Some(line) = lines[at + 1..]
            .iter()
            .find(|l| !l.is_empty() && !l.starts_with([' ', '\t', '|', '+']))
        {
            return Some(unprefixed(line).trim().to_owned());
        }
    }
    let meaningful = |l: &&&str| {
        let u = unprefixed(l).trim();
        !u.is_empty() && !FOLLOW_ONS.iter().any(|f| u.starts_with(f))
    };
    let errors = lines
        .iter()
        .rev()
        .filter(|l| {
            ["ERROR:", "CRITICAL:", "Error:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .find(meaningful);
    errors
        .or_else(|| lines.iter().rev().find(meaningful))
        .or_else(|| lines.iter().rev().find(|l| !l.trim().is_empty()))
        .map(|l| unprefixed(l).trim().to_owned())
}

/// Where a traceback frame's code lives when it is not the program's own:
/// the package under site-packages, the standard library module, or the
/// frozen module (`<frozen importlib._bootstrap>`), else None.
fn library_of(frame: &str) -> Option<&str> {
    let path = frame
        .trim_start()
        .strip_prefix("File \"")?
        .split('"')
        .next()?;
    if let Some(frozen) = path.strip_prefix("<frozen ") {
        return frozen.split(['.', '>']).next();
    }
    for marker in ["/site-packages/", "/dist-packages/"] {
        if let Some((_, rest)) = path.split_once(marker) {
            return rest.split(['/', '.']).next();
        }
    }
    // The standard library: .../lib/python3.X/module...
    let (_, rest) = path.split_once("/lib/python3.")?;
    let rest = rest.split_once('/')?.1;
    rest.split(['/', '.']).next()
}

/// `text` with the traceback frames of libraries (site-packages, the
/// standard library, frozen modules) folded into one line per run, e.g.
/// `  ... 9 frames in click, uvicorn, importlib`: the program's own frames
/// and the exception stay, so a short tail still shows where it failed.
pub fn condensed(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut folded: Vec<&str> = Vec::new();
    let mut frames = 0;
    let mut in_library_frame = false;
    let flush = |out: &mut Vec<String>, folded: &mut Vec<&str>, frames: &mut usize| {
        if *frames > 0 {
            let noun = if *frames == 1 { "frame" } else { "frames" };
            out.push(format!("  ... {frames} {noun} in {}", folded.join(", ")));
        }
        folded.clear();
        *frames = 0;
    };
    for line in text.lines() {
        let frame = line.starts_with("  File \"");
        if frame {
            if let Some(lib) = library_of(line) {
                if !folded.contains(&lib) {
                    folded.push(lib);
                }
                frames += 1;
                in_library_frame = true;
                continue;
            }
            in_library_frame = false;
        } else if in_library_frame && line.starts_with("    ") {
            continue; // the library frame's source line and its ^^^ markers
        } else {
            in_library_frame = false;
        }
        flush(&mut out, &mut folded, &mut frames);
        out.push(line.to_owned());
    }
    flush(&mut out, &mut folded, &mut frames);
    out.join("\n")
}

/// The last `max` lines of `text` (library frames folded: `condensed`),
/// led by `reason` when it does not lead already (the error first, then
/// the lines it came from).
pub fn tail_led_by(reason: Option<&str>, text: &str, max: usize) -> Option<String> {
    let text = condensed(text);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(max)..].join("\n");
    if tail.trim().is_empty() {
        return reason.map(str::to_owned);
    }
    match reason {
        Some(r) if tail.lines().next().map(str::trim) != Some(r) => Some(format!("{r}\n{tail}")),
        _ => Some(tail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFESPAN: &str = "INFO:     Waiting for application startup.
ERROR:    Traceback (most recent call last):
  File \"/x/starlette/routing.py\", line 661, in lifespan
    async with self.lifespan_context(app) as maybe_state:
  File \"/app/a.py\", line 6, in lifespan
    raise RuntimeError(\"database unreachable\")
RuntimeError: database unreachable

ERROR:    Application startup failed. Exiting.";

    #[test]
    fn reports_round_trip_whatever_their_text() {
        let ready = Report::Ready {
            launch: "L".into(),
            pid: 12,
        };
        assert_eq!(Report::parse(&ready.to_datagram()), Some(ready));
        for text in [
            "",
            "A\nB\r\n",
            "a\tb",
            "back\\slash \"quoted\"",
            "é 日本 🚀",
            "\u{0}\u{1b}[31m",
        ] {
            let r = Report::Failed {
                launch: "L 1\n".into(),
                pid: 13,
                text: text.into(),
            };
            assert_eq!(Report::parse(&r.to_datagram()), Some(r.clone()));
            assert_eq!(r.launch(), "L 1\n");
        }
        assert_eq!(Report::parse(b"ready L 12"), None);
        assert_eq!(
            Report::parse(br#"{"kind":"failed","launch":"L","pid":"x"}"#),
            None
        );
        assert_eq!(Report::parse(b"hello"), None);
    }

    #[test]
    fn a_long_report_keeps_the_end_of_its_text() {
        // Control characters take six bytes each once escaped, non-ASCII
        // up to four: the datagram still fits, and the last line survives.
        for filler in ["x", "\u{1}", "日", "🚀\n", "\"\\\u{8}\u{c}\t\u{7f}"] {
            let text = format!("{}\nRuntimeError: the real error", filler.repeat(40_000));
            let r = Report::Failed {
                launch: "L".into(),
                pid: 13,
                text,
            };
            let bytes = r.to_datagram();
            assert!(bytes.len() <= DATAGRAM_LIMIT, "{filler:?}: {}", bytes.len());
            assert!(bytes.len() > DATAGRAM_LIMIT - 8, "{filler:?}: cut too much");
            let Some(Report::Failed { text, .. }) = Report::parse(&bytes) else {
                panic!("{filler:?}");
            };
            assert!(text.ends_with("RuntimeError: the real error"));
        }
    }

    #[test]
    fn the_exception_behind_a_lifespan_failure() {
        assert_eq!(
            reason(LIFESPAN).as_deref(),
            Some("RuntimeError: database unreachable")
        );
    }

    #[test]
    fn the_last_traceback_wins_and_its_first_line() {
        let t = "Traceback (most recent call last):\n  File \"a\", line 1\nKeyError: 'a'\n\n\
                 During handling of the above exception, another exception occurred:\n\n\
                 Traceback (most recent call last):\n  File \"b\", line 2\n    x()\n    ^^^\n\
                 ModuleNotFoundError: No module named 'x'\nmore text";
        assert_eq!(
            reason(t).as_deref(),
            Some("ModuleNotFoundError: No module named 'x'")
        );
    }

    #[test]
    fn without_a_traceback_the_last_real_error_line() {
        let t = "ERROR:    Error loading ASGI app. Could not import module \"nosuch\".\n\
                 ERROR:    Child process [15397] failed to start, stopping the parent process.\n\
                 INFO:     Stopping parent process [1]";
        assert_eq!(
            reason(t).as_deref(),
            Some("Error loading ASGI app. Could not import module \"nosuch\".")
        );
        assert_eq!(
            reason("Usage: uvicorn [OPTIONS] APP\nError: No such option: --nope").as_deref(),
            Some("Error: No such option: --nope")
        );
        assert_eq!(
            reason("ERROR:    Application startup failed. Exiting.").as_deref(),
            Some("Application startup failed. Exiting.")
        );
        assert_eq!(reason("plain words\n\n").as_deref(), Some("plain words"));
        assert_eq!(reason("  \n"), None);
    }

    #[test]
    fn library_frames_fold_and_the_programs_stay() {
        let t = "Traceback (most recent call last):
  File \"/v/lib/python3.11/site-packages/click/core.py\", line 1414, in invoke
    return ctx.invoke(self.callback, **ctx.params)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File \"/v/lib/python3.11/site-packages/uvicorn/main.py\", line 448, in main
    run(
  File \"/py/lib/python3.11/importlib/__init__.py\", line 126, in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
  File \"<frozen importlib._bootstrap>\", line 1204, in _gcd_import
  File \"/srv/app/api.py\", line 1, in <module>
    import nonexistent_mod
ModuleNotFoundError: No module named 'nonexistent_mod'";
        assert_eq!(
            condensed(t),
            "Traceback (most recent call last):
  ... 4 frames in click, uvicorn, importlib
  File \"/srv/app/api.py\", line 1, in <module>
    import nonexistent_mod
ModuleNotFoundError: No module named 'nonexistent_mod'"
        );
        // Text that is not a traceback is left as it is.
        assert_eq!(condensed(LIFESPAN), LIFESPAN);
        assert_eq!(condensed("a\n  b\nc"), "a\n  b\nc");
    }

    #[test]
    fn tails_lead_with_the_reason() {
        let t = tail_led_by(Some("RuntimeError: database unreachable"), LIFESPAN, 30).unwrap();
        assert!(t.starts_with("RuntimeError: database unreachable\nINFO:"));
        assert_eq!(tail_led_by(Some("x"), "x\ny", 30).as_deref(), Some("x\ny"));
        assert_eq!(tail_led_by(Some("x"), "", 30).as_deref(), Some("x"));
        assert_eq!(tail_led_by(None, "a\nb\nc", 2).as_deref(), Some("b\nc"));
    }
}
