//! Deterministic fuzzing of the parsers and validators that see untrusted
//! input (PID files, identity files, names, paths, ports): a million inputs
//! each, random bytes and mutations of valid ones. No panic, no hang, and
//! every accepted value satisfies the invariants the rest of the crate
//! relies on. (cargo-fuzz needs a nightly toolchain, which this project's
//! machines do not have; these run under `cargo test`.)

#![cfg(test)]

use std::time::{Duration, Instant};

use crate::record::{parse_pid, Identity};
use crate::validate;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, seeds: &[&[u8]]) -> Vec<u8> {
        let mut v: Vec<u8> = if self.below(2) == 0 {
            seeds[self.below(seeds.len() as u64) as usize].to_vec()
        } else {
            (0..self.below(24)).map(|_| self.next() as u8).collect()
        };
        for _ in 0..self.below(4) {
            let op = self.below(4);
            let at = self.below(v.len() as u64 + 1) as usize;
            match op {
                0 => v.insert(at, self.next() as u8),
                1 if at < v.len() => {
                    v.remove(at);
                }
                2 if at < v.len() => v[at] = b"0123456789 -+\n\0=:/."[self.below(19) as usize],
                _ => v.insert(at, b"0123456789"[self.below(10) as usize]),
            }
        }
        v
    }
}

const N: usize = 1_000_000;
const BUDGET: Duration = Duration::from_secs(120);

#[test]
fn pid_parser_never_panics_and_only_accepts_plausible_pids() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds: &[&[u8]] = &[
        b"1234",
        b" 42\n",
        b"0",
        b"1",
        b"-7",
        b"4194304",
        b"99999999999",
    ];
    let start = Instant::now();
    for _ in 0..N {
        let input = rng.bytes(seeds);
        if let Some(pid) = parse_pid(&input, 4_194_304) {
            assert!((2..=4_194_304).contains(&pid), "{input:?} -> {pid}");
        }
    }
    assert!(start.elapsed() < BUDGET);
}

#[test]
fn identity_parser_never_panics() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let valid = Identity {
        pid: 77,
        start_ticks: 5,
        port: 80,
        ..Default::default()
    }
    .to_text();
    let seeds: &[&[u8]] = &[
        valid.as_bytes(),
        b"format=1\npid=5\nstart_ticks=1\n",
        b"pid=",
    ];
    let start = Instant::now();
    for _ in 0..N {
        let input = rng.bytes(seeds);
        if let Ok(text) = std::str::from_utf8(&input) {
            if let Some(id) = Identity::parse(text) {
                assert!(id.pid > 1);
            }
        }
    }
    assert!(start.elapsed() < BUDGET);
}

#[test]
fn name_app_and_port_validation_never_panic() {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let seeds: &[&[u8]] = &[b"main", b"../x", b"a.b-c_d", b"..", b"pkg.mod:app"];
    let start = Instant::now();
    for _ in 0..N {
        let input = rng.bytes(seeds);
        let text = String::from_utf8_lossy(&input);
        if validate::name(&text).is_ok() {
            // An accepted name can never leave the PID directory.
            assert!(!text.contains('/') && text != "." && text != ".." && !text.is_empty());
            assert!(!text.contains('\0'));
        }
        let _ = validate::app_path(&text);
        let port = rng.next() as i64 >> rng.below(64);
        if let Ok(p) = validate::port(port) {
            assert!(p >= 1);
        }
    }
    assert!(start.elapsed() < BUDGET);
}
