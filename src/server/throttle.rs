//! Per-client rate limits for the endpoints that check secrets or make state for anyone who
//! asks: failed logins (Basic on a registry route, `/token`), `/validate-creds` (an oracle for
//! an upstream's passwords) and `/container-token` (each token is a file and decoded layers).
//!
//! A client is its IP address (an IPv6 address by its /64, which one host usually owns whole).
//! Each client has a window of [`WINDOW`]: past its budget, requests get 429 `TOOMANYREQUESTS`
//! with `Retry-After` until the window ends. The table holds at most [`MAX_CLIENTS`] clients;
//! when it is full, the client whose window started first is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use acr_plugins::RegistryError;

/// How long a client's count lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Clients tracked at once, per limit.
pub const MAX_CLIENTS: usize = 10_000;
/// Failed logins per client per window (wrong password, unknown user, forged token).
pub const FAILED_LOGINS: u32 = 20;
/// `/validate-creds` requests per client per window.
pub const CREDENTIAL_CHECKS: u32 = 10;
/// `/container-token` tokens made per client per window.
pub const TOKENS_MADE: u32 = 60;

/// One limit: at most `budget` events per client per [`WINDOW`].
#[derive(Debug)]
pub struct Throttle {
    what: &'static str,
    budget: u32,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The key a client is counted under.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                for s in &mut segments[4..] {
                    *s = 0;
                }
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl Throttle {
    pub fn new(what: &'static str, budget: u32) -> Self {
        Self {
            what,
            budget,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses `ip` when its budget for this window is spent; does not count.
    pub fn check(&self, ip: IpAddr) -> Result<(), RegistryError> {
        let key = client_of(ip);
        let Ok(clients) = self.clients.lock() else {
            return Ok(());
        };
        match clients.get(&key) {
            Some((start, n)) if *n >= self.budget && start.elapsed() < WINDOW => {
                let wait = WINDOW.saturating_sub(start.elapsed()).as_secs().max(1);
                Err(RegistryError::new(
                    429,
                    "TOOMANYREQUESTS",
                    format!(
                        "too many {} from this address: at most {} a minute; try again in {wait} s",
                        self.what, self.budget
                    ),
                )
                .with_header("Retry-After", &wait.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Counts one event of `ip`.
    pub fn count(&self, ip: IpAddr) {
        let key = client_of(ip);
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        if !clients.contains_key(&key) && clients.len() >= MAX_CLIENTS {
            clients.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if clients.len() >= MAX_CLIENTS {
                let oldest = clients
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    clients.remove(&k);
                }
            }
        }
        let entry = clients.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Checks, then counts: for events that cost whatever their outcome.
    pub fn take(&self, ip: IpAddr) -> Result<(), RegistryError> {
        self.check(ip)?;
        self.count(ip);
        Ok(())
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// The limits of one acr process.
#[derive(Debug)]
pub struct Throttles {
    pub failed_logins: Throttle,
    pub credential_checks: Throttle,
    pub tokens_made: Throttle,
}

impl Default for Throttles {
    fn default() -> Self {
        Self {
            failed_logins: Throttle::new("failed logins", FAILED_LOGINS),
            credential_checks: Throttle::new("credential checks", CREDENTIAL_CHECKS),
            tokens_made: Throttle::new("container tokens", TOKENS_MADE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_budget_waits_and_others_do_not() {
        let t = Throttle::new("things", 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            t.take(a).unwrap();
        }
        let e = t.take(a).unwrap_err();
        assert_eq!(e.status, 429);
        assert!(e.headers.iter().any(|(k, _)| k == "Retry-After"));
        t.take(b).unwrap();
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        let t = Throttle::new("things", 1);
        t.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(t.take("2001:db8:1:2:ffff::9".parse().unwrap()).is_err());
        t.take("2001:db8:1:3::1".parse().unwrap()).unwrap();
        // A v4-mapped address is its v4 address.
        t.take("192.0.2.1".parse().unwrap()).unwrap();
        assert!(t.take("::ffff:192.0.2.1".parse().unwrap()).is_err());
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = Throttle::new("things", 1);
        for i in 0..(MAX_CLIENTS as u32 + 500) {
            t.count(IpAddr::V4(std::net::Ipv4Addr::from(i)));
        }
        assert!(t.tracked() <= MAX_CLIENTS);
    }
}
