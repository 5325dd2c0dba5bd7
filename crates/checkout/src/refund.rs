//! The arithmetic of refunds: how far a payment is refunded after a provider's report, and how
//! many credits to claw back for it.

/// How a provider reports a refund's amount. Each provider adapter says which it sends; the
/// arithmetic that follows is [`RefundReport::total_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundReport {
    /// The payment's refunded total so far, every refund included (Stripe's `amount_refunded`
    /// on `charge.refunded`).
    Cumulative(i64),
    /// This refund's own amount (Creem's `refund_amount` on `refund.created`).
    PerRefund(i64),
    /// No amount: the whole payment.
    Full,
}

impl RefundReport {
    /// The payment's refunded total after this refund, from what was refunded before
    /// (`stored_minor`) and what was paid: cumulative reports only move it forward (a late,
    /// smaller report changes nothing), per-refund amounts add up, and a refund without an
    /// amount refunds everything.
    pub fn total_after(self, stored_minor: i64, paid_minor: i64) -> i64 {
        match self {
            Self::Cumulative(total) => total.max(stored_minor),
            Self::PerRefund(amount) => stored_minor.saturating_add(amount.max(0)),
            Self::Full => paid_minor.max(stored_minor),
        }
    }
}

/// Credits to claw back now for a payment that granted `granted` credits for `paid_minor`,
/// given that `refunded_minor` has been refunded in total (including this refund) and
/// `clawed_back` credits were already taken back for it. Proportional, rounded down per step
/// but exact in total: a full refund claws back everything granted.
pub fn clawback_credits(
    granted: i64,
    paid_minor: i64,
    refunded_minor: i64,
    clawed_back: i64,
) -> i64 {
    if granted <= 0 {
        return 0;
    }
    let target = if paid_minor <= 0 || refunded_minor >= paid_minor {
        granted
    } else {
        let refunded = refunded_minor.max(0);
        i64::try_from(i128::from(granted) * i128::from(refunded) / i128::from(paid_minor))
            .unwrap_or(granted)
    };
    (target - clawed_back).clamp(0, granted)
}

#[cfg(test)]
mod tests {
    use super::{RefundReport, clawback_credits};

    #[test]
    fn refunded_totals() {
        assert_eq!(
            RefundReport::Cumulative(200).total_after(300, 1000),
            300,
            "never backwards"
        );
        assert_eq!(RefundReport::Cumulative(700).total_after(300, 1000), 700);
        assert_eq!(RefundReport::PerRefund(200).total_after(300, 1000), 500);
        assert_eq!(RefundReport::Full.total_after(300, 1000), 1000);
    }

    #[test]
    fn full_refund_takes_back_everything() {
        assert_eq!(clawback_credits(1000, 999, 999, 0), 1000);
        assert_eq!(
            clawback_credits(1000, 0, 0, 0),
            1000,
            "free payment refunded in full"
        );
    }

    #[test]
    fn partial_refunds_are_proportional_and_sum_to_the_grant() {
        let first = clawback_credits(1000, 1000, 250, 0);
        assert_eq!(first, 250);
        let second = clawback_credits(1000, 1000, 600, first);
        assert_eq!(second, 350);
        let last = clawback_credits(1000, 1000, 1000, first + second);
        assert_eq!(first + second + last, 1000);
    }

    #[test]
    fn rounding_never_overshoots() {
        let a = clawback_credits(10, 3, 1, 0);
        let b = clawback_credits(10, 3, 2, a);
        let c = clawback_credits(10, 3, 3, a + b);
        assert_eq!((a, b, c), (3, 3, 4));
        assert_eq!(clawback_credits(10, 3, 3, 10), 0, "nothing left to take");
        assert_eq!(clawback_credits(10, 3, 1, 8), 0, "never negative");
    }
}
