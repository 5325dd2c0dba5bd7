//! The arithmetic of clawing back credits when a payment is refunded.

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
    use super::clawback_credits;

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
