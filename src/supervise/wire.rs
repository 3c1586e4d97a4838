//! What a caller hands to the supervisor process it spawns (on its stdin):
//! the server's spec, the output mode and whether to start a run or attach
//! to a running one, as one JSON document (serde).

use serde::{Deserialize, Serialize};

use crate::spec::ServerSpec;

/// The supervisor's orders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub cfg: ServerSpec,
    pub redirect_output: bool,
    /// Attach to this running server instead of starting one.
    pub attach: Option<i32>,
    /// The caller hands the held listening socket over as descriptor 3.
    pub socket_fd: bool,
    /// The caller hands its lifeline over as `SUPERVISOR_LIFELINE_FD`:
    /// supervision ends, and the server stops, when the caller does.
    pub lifeline: bool,
}

impl Order {
    /// The orders as JSON. What is the caller's alone stays behind: its
    /// lifeline travels as `lifeline`, a supervised server keeps its
    /// history and its default PID file (a chosen one is refused with a
    /// policy).
    pub fn to_text(&self) -> String {
        let mut order = self.clone();
        order.cfg.stop_with_caller = false;
        order.cfg.pid_file = None;
        order.cfg.history = false;
        serde_json::to_string(&order).expect("orders always serialize")
    }

    /// Parses `to_text`; the configuration is validated by `Server::new`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut order: Order = serde_json::from_str(text).map_err(|e| e.to_string())?;
        order.attach = order.attach.filter(|p| *p > 1);
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_round_trip() {
        let order = Order {
            cfg: crate::spec::tests::sample(),
            redirect_output: true,
            attach: Some(4242),
            socket_fd: true,
            lifeline: true,
        };
        let back = Order::parse(&order.to_text()).unwrap();
        assert_eq!(back.to_text(), order.to_text());
        assert_eq!(back.cfg.env, order.cfg.env);
        assert_eq!(back.attach, Some(4242));
        assert!(back.cfg.warm && back.cfg.preload == ["numpy"]);
        assert!(Order::parse("bogus=1").is_err());
    }
}
