//! Unit tests of `logfile`: lines, stamps, rotated names and the rotating
//! `Sink` (a full disk, an outside rotation), on files written here.

use super::*;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("usm-logw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quiet() -> impl FnMut(&str, &str) {
    |_: &str, _: &str| {}
}
#[test]
fn names_and_stamps() {
    assert_eq!(
        rotated_name(Path::new("/l/a_server.log"), 3),
        PathBuf::from("/l/a_server.log.3")
    );
    assert_eq!(stamp(0), "1970-01-01T00:00:00.000Z ");
    // 2026-12-01T03:04:05.123Z
    assert_eq!(stamp(1_796_094_245_123), "2026-12-01T03:04:05.123Z ");
    // The shape `protocol::LOG_STAMP_PATTERN` tells Python to match.
    assert_eq!(
        crate::protocol::LOG_STAMP_PATTERN,
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z "
    );
    let shape: String = stamp(1_796_094_245_123)
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(shape, "dddd-dd-ddTdd:dd:dd.dddZ ");
}

#[test]
fn lines_are_whole_and_stamped_once() {
    let mut a = LineAssembler::default();
    let mut out = Vec::new();
    assert_eq!(a.feed(b"one\ntw", Some("S1 "), &mut out), 1);
    assert_eq!(out, b"S1 one\n");
    assert!(a.has_partial());
    assert_eq!(a.feed(b"o\nthree", Some("S2 "), &mut out), 1);
    assert_eq!(out, b"S1 one\nS1 two\n");
    assert_eq!(a.flush(&mut out), 1);
    assert_eq!(out, b"S1 one\nS1 two\nS2 three\n");
    assert_eq!(a.flush(&mut out), 0);
    let mut plain = LineAssembler::default();
    let mut out = Vec::new();
    assert_eq!(plain.feed(b"a\nb\nc", None, &mut out), 2);
    assert_eq!(plain.feed(b"d", None, &mut out), 0);
    assert_eq!(plain.feed(b"\ne\n", None, &mut out), 2);
    assert_eq!(out, b"a\nb\ncd\ne\n");
}

#[test]
fn rotation_as_rotating_file_handler() {
    let d = dir("rot");
    let base = d.join("x_server.log");
    let opts = LogOptions {
        max_bytes: 100,
        backup_count: 3,
        timestamps: false,
    };
    let mut sink = Sink::open(base.clone(), opts);
    let mut all = Vec::new();
    for i in 0..100 {
        let line = format!("line {i:04}\n"); // 10 bytes
        all.push(line.clone());
        sink.write(line.as_bytes(), &mut quiet());
    }
    // A batch crossing the cap is split at a line boundary.
    let batch: String = (100..130).map(|i| format!("line {i:04}\n")).collect();
    sink.write(batch.as_bytes(), &mut quiet());
    assert!(!rotated_name(&base, 4).exists());
    let mut kept = String::new();
    for n in (1..=3).rev() {
        let t = std::fs::read_to_string(rotated_name(&base, n)).unwrap();
        assert!(t.len() <= 100, "{n}: {}", t.len());
        kept.push_str(&t);
    }
    let current = std::fs::read_to_string(&base).unwrap();
    assert!(current.len() <= 100);
    kept.push_str(&current);
    let nums: Vec<u32> = kept.lines().map(|l| l[5..].parse().unwrap()).collect();
    assert_eq!(*nums.last().unwrap(), 129);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    assert_eq!(nums.len(), 40);
    // A line longer than the cap goes whole into a file of its own.
    let long = format!("{}\n", "y".repeat(150));
    sink.write(long.as_bytes(), &mut quiet());
    sink.write(b"after\n", &mut quiet());
    assert_eq!(
        std::fs::read_to_string(rotated_name(&base, 1)).unwrap(),
        long
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_outside_rotation_is_followed() {
    let d = dir("outside");
    let base = d.join("o_server.log");
    let opts = LogOptions {
        max_bytes: 1000,
        backup_count: 2,
        timestamps: false,
    };
    let mut sink = Sink::open(base.clone(), opts);
    let due = |sink: &mut Sink| sink.watched_at = Instant::now() - WATCH_EVERY;
    sink.write(b"before\n", &mut quiet());
    // logrotate's `create`: the file is moved away, then written on.
    std::fs::rename(&base, d.join("moved")).unwrap();
    due(&mut sink);
    sink.write(b"after the move\n", &mut quiet());
    assert_eq!(
        std::fs::read_to_string(d.join("moved")).unwrap(),
        "before\n"
    );
    assert_eq!(std::fs::read_to_string(&base).unwrap(), "after the move\n");
    // Removed outright.
    std::fs::remove_file(&base).unwrap();
    due(&mut sink);
    sink.write(b"after the rm\n", &mut quiet());
    assert_eq!(std::fs::read_to_string(&base).unwrap(), "after the rm\n");
    // `copytruncate`: the same file, cut; our size follows, so the
    // cap is counted from the cut and no early rotation comes.
    for _ in 0..65 {
        sink.write(b"0123456789abcd\n", &mut quiet());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&base)
        .unwrap()
        .set_len(0)
        .unwrap();
    due(&mut sink);
    sink.write(b"after the cut\n", &mut quiet());
    assert!(!rotated_name(&base, 1).exists());
    assert_eq!(std::fs::read_to_string(&base).unwrap(), "after the cut\n");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn no_backups_cuts_the_file() {
    let d = dir("cut");
    let base = d.join("x.log");
    let opts = LogOptions {
        max_bytes: 20,
        backup_count: 0,
        timestamps: false,
    };
    let mut sink = Sink::open(base.clone(), opts);
    sink.write(b"aaaaaaaaa\nbbbbbbbbb\n", &mut quiet());
    sink.write(b"ccccccccc\n", &mut quiet());
    assert_eq!(std::fs::read_to_string(&base).unwrap(), "ccccccccc\n");
    assert!(!rotated_name(&base, 1).exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_full_disk_drops_counts_and_tells_once() {
    // /dev/full: every write fails with ENOSPC.
    let mut sink = Sink::open(PathBuf::from("/dev/full"), LogOptions::default());
    let mut said = Vec::new();
    let mut say = |l: &str, m: &str| said.push(format!("{l}: {m}"));
    sink.write(b"a\nb\n", &mut say);
    sink.write(b"c\n", &mut say);
    assert_eq!(sink.dropped(), 3);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("no room"), "{said:?}");
}
