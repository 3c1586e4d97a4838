//! The configuration a server was started with, kept in its record
//! (`record=2` keys): one escaped `key=value` line each.

/// The configuration a server was started with, beyond what `Identity`
/// always held: what `restart` needs to start it again the same way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedConfig {
    pub workers: u32,
    /// The server's working directory (absolute), empty for the caller's.
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub redirect_output: bool,
    pub start_timeout_ms: u64,
    pub stop_timeout_ms: u64,
    pub uvicorn_args: Vec<String>,
    /// The interpreter that ran it.
    pub python: String,
    /// Whether the manager held its listening socket (the server has it as
    /// descriptor 3, where a reload from another process takes it from).
    pub hold_socket: bool,
    /// Restart policy, health check and memory limit.
    pub supervision: crate::supervise::Supervision,
    /// Whether servers are forked from a warm-start preloader.
    pub warm: bool,
    /// The preloader's extra modules.
    pub preload: Vec<String>,
    /// Whether how each run ended is kept on disk, clean stops included
    /// (`ServerManager(history=True)`, the CLI's starts; a supervised
    /// server always keeps it).
    pub history: bool,
}

/// Escapes a value for one `key=value` line.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

/// Undoes `escape`.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl SavedConfig {
    pub(super) fn to_text(&self) -> String {
        let mut t = format!(
            "record=2\nworkers={}\ncwd={}\nredirect={}\nstart_timeout_ms={}\nstop_timeout_ms={}\npython={}\nhold_socket={}\n",
            self.workers,
            escape(&self.cwd),
            u8::from(self.redirect_output),
            self.start_timeout_ms,
            self.stop_timeout_ms,
            escape(&self.python),
            u8::from(self.hold_socket),
        );
        if self.supervision.is_supervised() {
            t.push_str(&self.supervision.to_text());
        }
        for (k, v) in &self.env {
            t.push_str(&format!("env={}={}\n", escape(k), escape(v)));
        }
        for a in &self.uvicorn_args {
            t.push_str(&format!("arg={}\n", escape(a)));
        }
        if self.warm {
            t.push_str("warm=1\n");
        }
        for m in &self.preload {
            t.push_str(&format!("preload={}\n", escape(m)));
        }
        if self.history {
            t.push_str("history=1\n");
        }
        t
    }

    /// Takes one `key=value` line of a `record=2` record; false if unknown.
    pub(super) fn take(&mut self, k: &str, v: &str) -> Option<bool> {
        match k {
            "workers" => self.workers = v.parse().ok()?,
            "cwd" => self.cwd = unescape(v),
            "redirect" => self.redirect_output = v == "1",
            "start_timeout_ms" => self.start_timeout_ms = v.parse().ok()?,
            "stop_timeout_ms" => self.stop_timeout_ms = v.parse().ok()?,
            "python" => self.python = unescape(v),
            "hold_socket" => self.hold_socket = v == "1",
            "env" => {
                let (ek, ev) = v.split_once('=')?;
                self.env.push((unescape(ek), unescape(ev)));
            }
            "arg" => self.uvicorn_args.push(unescape(v)),
            "warm" => self.warm = v == "1",
            "preload" => self.preload.push(unescape(v)),
            "history" => self.history = v == "1",
            _ => return self.supervision.take(k, v),
        }
        Some(true)
    }
}
