//! The text forms of the relay catch-up reports.

use super::*;

impl std::fmt::Display for RelayGraphReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "relay graph: {} followed by {} users `{}fN` (built in {:.1} s{})",
            self.author,
            self.followers,
            self.user_prefix,
            self.graph_secs,
            if self.settled {
                ""
            } else {
                ", worker NOT settled"
            }
        )
    }
}

impl std::fmt::Display for RelayPostReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "posts while NATS is down: {} accepted of {} ({:.0} posts/s), rejected {}",
            self.accepted, self.posts, self.posts_per_sec, self.rejected
        )?;
        writeln!(f, "  latency     {}", self.latency)?;
        write!(
            f,
            "  outbox      {} left for the relay; counters: relayed {}, rows {}",
            self.deferred, self.relayed_before, self.rows_before
        )
    }
}

impl std::fmt::Display for RelayMeasureReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "relay catch-up: {} posts × {} followers, timed from NATS back{}",
            self.posts,
            self.followers,
            if self.nats_up_at_start {
                " (it was already up: late start)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  API reconnected       {}",
            secs(self.api_reconnected_secs)
        )?;
        writeln!(
            f,
            "  relayed               {} of {}: first {}, last {}; {} ({} since NATS back)",
            self.relayed,
            self.posts,
            secs(self.first_relayed_secs),
            secs(self.all_relayed_secs),
            rate(self.relay_posts_per_sec),
            rate(self.catchup_posts_per_sec)
        )?;
        writeln!(
            f,
            "  followers converged   {} ({} of {} rows, first row {})",
            if self.converged {
                secs(self.converged_secs)
            } else {
                "NO (timed out)".to_owned()
            },
            self.rows_written,
            self.expected_rows,
            secs(self.first_row_secs)
        )?;
        write!(
            f,
            "  missing {}, unexpected {}   (both must be 0)",
            self.missing, self.unexpected
        )
    }
}
