//! Faults the stack can inject, one real mechanism each, and their text
//! form `NAME[=VALUE]` for command lines.

use std::{fmt, time::Duration};

use serde_json::{Map, Value, json};

/// How a DNS fault fails every query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFailure {
    /// Answers with rcode SERVFAIL.
    ServFail,
    /// Answers with rcode NXDOMAIN.
    NxDomain,
    /// Answers nothing, so that the resolver times out.
    Drop,
}

impl DnsFailure {
    fn as_str(self) -> &'static str {
        match self {
            DnsFailure::ServFail => "servfail",
            DnsFailure::NxDomain => "nxdomain",
            DnsFailure::Drop => "drop",
        }
    }
}

/// A CFS bandwidth limit as `cpu.max` takes it: a quota of CPU time in
/// each period, both in whole microseconds. [`CpuQuota::new`] accepts only
/// what the kernel accepts, so a quota that exists can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    quota: Duration,
    period: Duration,
}

impl CpuQuota {
    /// The kernel's bounds: periods from 1 ms to 1 s, quotas from 1 ms to
    /// 2^44 - 1 us, about 203 days (`max_cfs_runtime`).
    const MIN_PERIOD: Duration = Duration::from_millis(1);
    const MAX_PERIOD: Duration = Duration::from_secs(1);
    const MIN_QUOTA: Duration = Duration::from_millis(1);
    const MAX_QUOTA: Duration = Duration::from_micros((1 << 44) - 1);

    /// # Errors
    ///
    /// When `cpu.max` would refuse the pair; the message names the bound.
    pub fn new(quota: Duration, period: Duration) -> Result<Self, String> {
        let whole_us = |d: Duration| d.subsec_nanos().is_multiple_of(1_000);
        if !whole_us(quota) || !whole_us(period) {
            return Err("cpu.max takes whole microseconds".into());
        }
        if !(Self::MIN_PERIOD..=Self::MAX_PERIOD).contains(&period) {
            return Err(format!(
                "the period {period:?} is outside the kernel's 1ms to 1s"
            ));
        }
        if quota < Self::MIN_QUOTA {
            return Err(format!(
                "the quota {quota:?} per {period:?} is below the kernel's 1ms; use a longer period"
            ));
        }
        if quota > Self::MAX_QUOTA {
            return Err(format!(
                "the quota {quota:?} is above the kernel's limit of about 203 days"
            ));
        }
        Ok(Self { quota, period })
    }

    /// Returns a quota of `percent` of one CPU in each `period`, both
    /// rounded to the microsecond because durations parsed from text
    /// carry float error.
    ///
    /// # Errors
    ///
    /// As [`CpuQuota::new`], or for a percentage that is not a positive
    /// number.
    pub fn of_cpu(percent: f64, period: Duration) -> Result<Self, String> {
        if !(percent.is_finite() && percent > 0.0) {
            return Err(format!("{percent}% of a CPU is not a positive share"));
        }
        let period_us = (period.as_secs_f64() * 1e6).round();
        let quota_us = (period_us * percent / 100.0).round();
        if quota_us > Self::MAX_QUOTA.as_micros() as f64 {
            return Err(format!("{percent}% of a CPU is too large a quota"));
        }
        Self::new(
            Duration::from_micros(quota_us as u64),
            Duration::from_micros(period_us as u64),
        )
    }

    pub fn quota(&self) -> Duration {
        self.quota
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Returns the quota as a percentage of one CPU.
    pub fn percent_of_cpu(&self) -> f64 {
        (self.quota.as_micros() * 100) as f64 / self.period.as_micros() as f64
    }
}

/// `PERCENT/PERIOD`, the value of `cpu-quota=`. The percentage is the
/// shortest decimal of one division, so that it parses back to the same
/// microseconds.
impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.percent_of_cpu(),
            format_duration(self.period)
        )
    }
}

/// One injected fault. Each slows or breaks one component for real: a
/// server that waits, a kernel that drops packets, a cgroup that throttles.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The provider stand-in waits this much longer before its first
    /// token.
    ProviderSlowFirstToken(Duration),
    /// The provider stand-in waits this long between tokens.
    ProviderSlowTokens(Duration),
    /// Every provider request in the first `burst` of each `period` gets
    /// HTTP 429 with `retry-after`.
    ProviderRateLimitBursts { period: Duration, burst: Duration },
    /// This share of provider requests gets HTTP 500.
    ProviderServerErrors { fraction: f64 },
    /// This share of provider streams stops after a few tokens, without
    /// its terminal event.
    ProviderTruncatedStreams { fraction: f64 },
    /// The retrieval query sleeps server-side (`pg_sleep` in the SQL
    /// function the query calls).
    SlowRetrievalQuery(Duration),
    /// A side connection keeps Redis busy with `DEBUG SLEEP` for `sleep`,
    /// pausing `gap` between commands. It stalls the whole server, so
    /// every command that arrives meanwhile waits.
    StalledCache { sleep: Duration, gap: Duration },
    /// The guardrail waits this long before each decision.
    SlowGuardrail(Duration),
    /// The DNS server waits this long before each answer.
    SlowDns(Duration),
    /// The DNS server fails every query.
    DnsFailure(DnsFailure),
    /// nftables drops this percentage of packets in each direction on
    /// the link between chat-api's network namespace and the provider's.
    PacketLoss { percent: f64 },
    /// A `tbf` qdisc limits the provider's sending rate towards chat-api.
    ProviderBandwidth { kbit_per_sec: u32 },
    /// chat-api's cgroup may use this much CPU time in each CFS period
    /// (`cpu.max`). A short period throttles each burst of work that needs
    /// more than the period's quota, without starving a service whose
    /// average use stays below the quota.
    CpuQuota(CpuQuota),
    /// Two busy loops pinned to the CPU that chat-api is pinned to, in a
    /// sibling cgroup whose CPU weight is `weight_ratio` times chat-api's:
    /// a neighbour pod that requested that many times more CPU.
    ///
    /// Plain busy loops next to chat-api (even at nice -10) did not take
    /// effect: the scheduler (EEVDF) runs a thread that wakes after a
    /// sleep within about one slice. Between cgroups the weights decide,
    /// so chat-api gets about `1 / (1 + weight_ratio)` of the CPU.
    ///
    /// NOTE: the loops also take that CPU from the unpinned rest of the
    /// stack (provider stand-in, load generator, databases), so part of
    /// the slowdown that the client sees is not chat-api's run-queue wait.
    NoisyNeighbour { weight_ratio: u32 },
}

/// The names that [`Fault::parse`] accepts, with their value's form.
pub const FAULT_SYNTAX: &[&str] = &[
    "slow-first-token=DURATION",
    "slow-tokens=DURATION (gap between tokens)",
    "rate-limit-bursts=BURST/PERIOD (for example 2s/5s)",
    "server-errors=FRACTION",
    "truncated-streams=FRACTION",
    "slow-retrieval=DURATION",
    "stalled-cache=SLEEP/GAP",
    "slow-guardrail=DURATION",
    "slow-dns=DURATION",
    "dns-failure=servfail|nxdomain|drop",
    "packet-loss=PERCENT",
    "bandwidth=KBIT_PER_SEC",
    "cpu-quota=PERCENT_OF_ONE_CPU[/PERIOD] (period 100ms unless given; 1ms to 1s, quota at least 1ms)",
    "noisy-neighbour=WEIGHT_RATIO",
];

impl Fault {
    /// Parses `NAME=VALUE` as listed in [`FAULT_SYNTAX`]. Durations take
    /// `ms` or `s`, such as `400ms` or `1.5s`.
    ///
    /// # Errors
    ///
    /// A message naming the invalid text and the accepted forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, value) = text.split_once('=').unwrap_or((text, ""));
        let invalid = || {
            format!(
                "invalid fault {text:?}; use one of: {}",
                FAULT_SYNTAX.join(", ")
            )
        };
        let duration = |value: &str| parse_duration(value).ok_or_else(invalid);
        let fraction = |value: &str| {
            value
                .parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or_else(invalid)
        };
        let pair = |value: &str| -> Result<(Duration, Duration), String> {
            let (first, second) = value.split_once('/').ok_or_else(invalid)?;
            Ok((duration(first)?, duration(second)?))
        };
        let number = |value: &str| value.parse::<u32>().map_err(|_| invalid());
        Ok(match name {
            "slow-first-token" => Fault::ProviderSlowFirstToken(duration(value)?),
            "slow-tokens" => Fault::ProviderSlowTokens(duration(value)?),
            "rate-limit-bursts" => {
                let (burst, period) = pair(value)?;
                Fault::ProviderRateLimitBursts { period, burst }
            }
            "server-errors" => Fault::ProviderServerErrors {
                fraction: fraction(value)?,
            },
            "truncated-streams" => Fault::ProviderTruncatedStreams {
                fraction: fraction(value)?,
            },
            "slow-retrieval" => Fault::SlowRetrievalQuery(duration(value)?),
            "stalled-cache" => {
                let (sleep, gap) = pair(value)?;
                Fault::StalledCache { sleep, gap }
            }
            "slow-guardrail" => Fault::SlowGuardrail(duration(value)?),
            "slow-dns" => Fault::SlowDns(duration(value)?),
            "dns-failure" => Fault::DnsFailure(match value {
                "servfail" => DnsFailure::ServFail,
                "nxdomain" => DnsFailure::NxDomain,
                "drop" => DnsFailure::Drop,
                _ => return Err(invalid()),
            }),
            "packet-loss" => Fault::PacketLoss {
                percent: value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(invalid)?,
            },
            "bandwidth" => Fault::ProviderBandwidth {
                kbit_per_sec: number(value)?,
            },
            "cpu-quota" => {
                let (percent, period) = value.split_once('/').unwrap_or((value, "100ms"));
                let percent = percent.parse::<f64>().map_err(|_| invalid())?;
                let quota = CpuQuota::of_cpu(percent, duration(period)?)
                    .map_err(|reason| format!("{}: {reason}", invalid()))?;
                Fault::CpuQuota(quota)
            }
            "noisy-neighbour" => Fault::NoisyNeighbour {
                weight_ratio: number(value)?,
            },
            _ => return Err(invalid()),
        })
    }

    /// The component a correct attribution names for this fault.
    pub fn component(&self) -> &'static str {
        match self {
            Fault::ProviderSlowFirstToken(_)
            | Fault::ProviderSlowTokens(_)
            | Fault::ProviderRateLimitBursts { .. }
            | Fault::ProviderServerErrors { .. }
            | Fault::ProviderTruncatedStreams { .. }
            | Fault::ProviderBandwidth { .. } => "provider",
            Fault::SlowRetrievalQuery(_) | Fault::StalledCache { .. } => "retrieval",
            Fault::SlowGuardrail(_) => "guardrail",
            Fault::SlowDns(_) | Fault::DnsFailure(_) => "dns",
            // With pooled provider connections no handshake is slowed, and
            // the lost segments of the streams make the provider slow.
            Fault::PacketLoss { .. } => "network",
            Fault::CpuQuota { .. } => "cpu_throttling",
            Fault::NoisyNeighbour { .. } => "run_queue",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: &Duration| format_duration(*d);
        match self {
            Fault::ProviderSlowFirstToken(d) => write!(f, "slow-first-token={}", ms(d)),
            Fault::ProviderSlowTokens(d) => write!(f, "slow-tokens={}", ms(d)),
            Fault::ProviderRateLimitBursts { period, burst } => {
                write!(f, "rate-limit-bursts={}/{}", ms(burst), ms(period))
            }
            Fault::ProviderServerErrors { fraction } => write!(f, "server-errors={fraction}"),
            Fault::ProviderTruncatedStreams { fraction } => {
                write!(f, "truncated-streams={fraction}")
            }
            Fault::SlowRetrievalQuery(d) => write!(f, "slow-retrieval={}", ms(d)),
            Fault::StalledCache { sleep, gap } => {
                write!(f, "stalled-cache={}/{}", ms(sleep), ms(gap))
            }
            Fault::SlowGuardrail(d) => write!(f, "slow-guardrail={}", ms(d)),
            Fault::SlowDns(d) => write!(f, "slow-dns={}", ms(d)),
            Fault::DnsFailure(kind) => write!(f, "dns-failure={}", kind.as_str()),
            Fault::PacketLoss { percent } => write!(f, "packet-loss={percent}"),
            Fault::ProviderBandwidth { kbit_per_sec } => write!(f, "bandwidth={kbit_per_sec}"),
            Fault::CpuQuota(quota) => write!(f, "cpu-quota={quota}"),
            Fault::NoisyNeighbour { weight_ratio } => write!(f, "noisy-neighbour={weight_ratio}"),
        }
    }
}

/// Formats a duration in milliseconds as [`parse_duration`] reads it,
/// such as `400ms` or `1.5ms`, to the microsecond.
pub fn format_duration(duration: Duration) -> String {
    let us = duration.as_micros();
    if us.is_multiple_of(1_000) {
        format!("{}ms", us / 1_000)
    } else {
        format!("{}ms", us as f64 / 1_000.0)
    }
}

/// Parses `400ms`, `1.5s` or `2s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(ms) => (ms, 1e-3),
        None => (text.strip_suffix('s')?, 1.0),
    };
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * scale).ok()
}

/// Baseline timings of the provider stand-in, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderTiming {
    pub min_ttft_ms: f64,
    pub max_ttft_ms: f64,
    pub min_gap_ms: f64,
    pub max_gap_ms: f64,
}

impl Default for ProviderTiming {
    fn default() -> Self {
        Self {
            min_ttft_ms: 80.0,
            max_ttft_ms: 160.0,
            min_gap_ms: 8.0,
            max_gap_ms: 16.0,
        }
    }
}

/// Builds the fault file that the Python services read: one object per
/// service, with the settings the faults change.
pub fn fault_file(faults: &[Fault], timing: ProviderTiming) -> Value {
    let mut provider = Map::new();
    let mut guardrail = Map::new();
    let mut dns = Map::new();
    for fault in faults {
        match fault {
            Fault::ProviderSlowFirstToken(extra) => {
                let extra_ms = extra.as_secs_f64() * 1000.0;
                provider.insert("min_ttft_ms".into(), json!(timing.min_ttft_ms + extra_ms));
                provider.insert("max_ttft_ms".into(), json!(timing.max_ttft_ms + extra_ms));
            }
            Fault::ProviderSlowTokens(gap) => {
                let gap_ms = gap.as_secs_f64() * 1000.0;
                provider.insert("min_gap_ms".into(), json!(gap_ms));
                provider.insert("max_gap_ms".into(), json!(gap_ms * 1.1));
            }
            Fault::ProviderRateLimitBursts { period, burst } => {
                provider.insert("rate_limit_period_secs".into(), json!(period.as_secs_f64()));
                provider.insert("rate_limit_burst_secs".into(), json!(burst.as_secs_f64()));
            }
            Fault::ProviderServerErrors { fraction } => {
                provider.insert("server_error_fraction".into(), json!(fraction));
            }
            Fault::ProviderTruncatedStreams { fraction } => {
                provider.insert("truncate_fraction".into(), json!(fraction));
            }
            Fault::SlowGuardrail(delay) => {
                guardrail.insert("delay_ms".into(), json!(delay.as_secs_f64() * 1000.0));
            }
            Fault::SlowDns(delay) => {
                dns.insert("delay_ms".into(), json!(delay.as_secs_f64() * 1000.0));
            }
            Fault::DnsFailure(kind) => {
                dns.insert("failure".into(), json!(kind.as_str()));
            }
            Fault::SlowRetrievalQuery(_)
            | Fault::StalledCache { .. }
            | Fault::PacketLoss { .. }
            | Fault::ProviderBandwidth { .. }
            | Fault::CpuQuota { .. }
            | Fault::NoisyNeighbour { .. } => {}
        }
    }
    json!({ "provider": provider, "guardrail": guardrail, "dns": dns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_through_text() {
        let faults = [
            Fault::ProviderSlowFirstToken(Duration::from_millis(800)),
            Fault::ProviderRateLimitBursts {
                period: Duration::from_secs(5),
                burst: Duration::from_secs(2),
            },
            Fault::StalledCache {
                sleep: Duration::from_millis(200),
                gap: Duration::from_millis(50),
            },
            Fault::DnsFailure(DnsFailure::ServFail),
            Fault::PacketLoss { percent: 5.0 },
            Fault::NoisyNeighbour { weight_ratio: 20 },
            Fault::CpuQuota(CpuQuota::of_cpu(15.0, Duration::from_millis(10)).unwrap()),
            Fault::CpuQuota(CpuQuota::of_cpu(10.8, Duration::from_millis(10)).unwrap()),
        ];
        for fault in faults {
            assert_eq!(Fault::parse(&fault.to_string()), Ok(fault.clone()));
        }
        assert_eq!(
            Fault::parse("cpu-quota=4"),
            Ok(Fault::CpuQuota(
                CpuQuota::new(Duration::from_millis(4), Duration::from_millis(100)).unwrap()
            ))
        );
    }

    #[test]
    fn cpu_quotas_outside_kernel_bounds_fail() {
        // 0.5 ms per 10 ms, and periods over 1 s and under 1 ms.
        for text in ["cpu-quota=5/10ms", "cpu-quota=50/2s", "cpu-quota=50/0.5ms"] {
            let error = Fault::parse(text).unwrap_err();
            assert!(error.contains(text), "{error}");
        }

        let error = CpuQuota::of_cpu(3.0, Duration::from_millis(10)).unwrap_err();
        assert!(error.contains("below the kernel's 1ms"), "{error}");
        assert!(CpuQuota::of_cpu(f64::NAN, Duration::from_millis(10)).is_err());
        assert!(CpuQuota::of_cpu(-10.0, Duration::from_millis(10)).is_err());
        assert!(CpuQuota::of_cpu(1e300, Duration::from_millis(10)).is_err());

        let period = Duration::from_millis(10);
        assert!(CpuQuota::new(Duration::from_nanos(1_000_500), period).is_err());
        let over_max = Duration::from_secs(204 * 86_400);
        assert!(CpuQuota::new(over_max, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn cpu_quotas_print_exactly() {
        // Periods need not be whole milliseconds.
        let quota = Fault::parse("cpu-quota=80/1.5ms").unwrap();
        let Fault::CpuQuota(quota) = quota else {
            panic!("{quota:?} is not a CPU quota");
        };
        assert_eq!(quota.quota(), Duration::from_micros(1_200));
        assert_eq!(quota.to_string(), "80/1.5ms");

        // Quotas the benchmark works out from a measured use.
        for (quota_us, period_ms) in [(1_047, 20), (1_001, 11), (333_333, 1_000)] {
            let quota = CpuQuota::new(
                Duration::from_micros(quota_us),
                Duration::from_millis(period_ms),
            )
            .unwrap();
            assert_eq!(
                Fault::parse(&Fault::CpuQuota(quota).to_string()),
                Ok(Fault::CpuQuota(quota))
            );
        }
    }

    #[test]
    fn invalid_fault_lists_the_forms() {
        let error = Fault::parse("slow-retrieval=fast").unwrap_err();
        assert!(error.contains("slow-retrieval=DURATION"), "{error}");
        assert!(Fault::parse("server-errors=1.5").is_err());
        assert!(Fault::parse("unknown").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("400ms"), Some(Duration::from_millis(400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("400"), None);
        assert_eq!(parse_duration("1e30s"), None);
        assert_eq!(parse_duration("-1ms"), None);
        assert_eq!(format_duration(Duration::from_millis(400)), "400ms");
        assert_eq!(format_duration(Duration::from_micros(700)), "0.7ms");
        assert_eq!(format_duration(Duration::from_micros(1_234)), "1.234ms");
    }

    #[test]
    fn slow_first_token_adds_to_the_baseline() {
        let file = fault_file(
            &[Fault::ProviderSlowFirstToken(Duration::from_millis(500))],
            ProviderTiming::default(),
        );
        assert_eq!(file["provider"]["min_ttft_ms"], json!(580.0));
        assert_eq!(file["provider"]["max_ttft_ms"], json!(660.0));
        assert_eq!(file["guardrail"], json!({}));
    }
}
