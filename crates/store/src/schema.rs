//! One Diesel schema for both backends: portable types only (BigInt, Text, Bool, Timestamp in UTC).

diesel::table! {
    accounts (id) {
        id -> BigInt,
        app_key -> Text,
        user_id -> Text,
        balance -> BigInt,
        held -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    transactions (id) {
        id -> BigInt,
        account_id -> BigInt,
        app_key -> Text,
        user_id -> Text,
        txn_type -> Text,
        amount -> BigInt,
        balance_after -> BigInt,
        description -> Text,
        idempotency_key -> Nullable<Text>,
        request_hash -> Nullable<Text>,
        metadata -> Nullable<Text>,
        actor -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    lots (id) {
        id -> BigInt,
        account_id -> BigInt,
        transaction_id -> BigInt,
        source -> Text,
        amount -> BigInt,
        remaining -> BigInt,
        expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    checkins (id) {
        id -> BigInt,
        app_key -> Text,
        user_id -> Text,
        day -> Text,
        streak -> BigInt,
        awarded -> BigInt,
        transaction_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    checkin_configs (app_key) {
        app_key -> Text,
        enabled -> Bool,
        rewards -> Text,
        timezone -> Text,
        credits_expire_days -> Nullable<Integer>,
        updated_by -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    holds (id) {
        id -> BigInt,
        account_id -> BigInt,
        app_key -> Text,
        user_id -> Text,
        amount -> BigInt,
        captured -> Nullable<BigInt>,
        status -> Text,
        description -> Text,
        metadata -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        request_hash -> Nullable<Text>,
        capture_hash -> Nullable<Text>,
        transaction_id -> Nullable<BigInt>,
        expires_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    redemption_codes (id) {
        id -> BigInt,
        app_key -> Text,
        code -> Text,
        batch -> Text,
        credits -> BigInt,
        max_uses -> BigInt,
        uses -> BigInt,
        expires_at -> Nullable<Timestamp>,
        credits_expire_days -> Nullable<Integer>,
        description -> Text,
        created_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    redemptions (id) {
        id -> BigInt,
        code_id -> BigInt,
        app_key -> Text,
        user_id -> Text,
        transaction_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    redeem_failures (id) {
        id -> BigInt,
        app_key -> Text,
        user_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    plans (id) {
        id -> BigInt,
        app_key -> Text,
        name -> Text,
        description -> Text,
        kind -> Text,
        currency -> Text,
        price_monthly -> Nullable<BigInt>,
        price_yearly -> Nullable<BigInt>,
        price -> Nullable<BigInt>,
        credits_included -> BigInt,
        features -> Text,
        stripe_price_id_monthly -> Nullable<Text>,
        stripe_price_id_yearly -> Nullable<Text>,
        stripe_price_id -> Nullable<Text>,
        creem_product_id_monthly -> Nullable<Text>,
        creem_product_id_yearly -> Nullable<Text>,
        creem_product_id -> Nullable<Text>,
        active -> Bool,
        sort_order -> BigInt,
        credits_expire_days -> Nullable<Integer>,
        created_by -> Text,
        updated_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        trial_days -> Nullable<Integer>,
        trial_credits -> BigInt,
    }
}

diesel::table! {
    coupons (id) {
        id -> BigInt,
        app_key -> Text,
        code -> Text,
        percent_off -> Nullable<BigInt>,
        amount_off -> Nullable<BigInt>,
        currency -> Nullable<Text>,
        duration -> Text,
        duration_months -> Nullable<Integer>,
        max_redemptions -> Nullable<BigInt>,
        times_redeemed -> BigInt,
        expires_at -> Nullable<Timestamp>,
        plan_ids -> Text,
        active -> Bool,
        created_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    orders (id) {
        id -> Text,
        app_key -> Text,
        user_id -> Text,
        order_type -> Text,
        status -> Text,
        plan_id -> Text,
        billing_interval -> Nullable<Text>,
        channel -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        discount_minor -> BigInt,
        coupon_code -> Nullable<Text>,
        credits -> BigInt,
        credits_expire_days -> Nullable<Integer>,
        provider_session_id -> Nullable<Text>,
        checkout_url -> Nullable<Text>,
        provider_customer_id -> Nullable<Text>,
        provider_subscription_id -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        request_hash -> Text,
        created_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> BigInt,
        app_key -> Text,
        user_id -> Text,
        plan_id -> Text,
        billing_interval -> Text,
        channel -> Text,
        order_id -> Text,
        provider_subscription_id -> Text,
        provider_customer_id -> Nullable<Text>,
        status -> Text,
        current_period_start -> Nullable<Timestamp>,
        current_period_end -> Nullable<Timestamp>,
        cancel_at_period_end -> Bool,
        credits_per_period -> BigInt,
        credits_expire -> Bool,
        status_changed_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        previous_period_start -> Nullable<Timestamp>,
    }
}

diesel::table! {
    billing_customers (app_key, user_id, channel) {
        app_key -> Text,
        user_id -> Text,
        channel -> Text,
        customer_id -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    provider_coupons (app_key, code, channel, price_ref) {
        app_key -> Text,
        code -> Text,
        channel -> Text,
        price_ref -> Text,
        provider_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    billing_events (id) {
        id -> BigInt,
        channel -> Text,
        event_id -> Text,
        event_type -> Text,
        app_key -> Nullable<Text>,
        user_id -> Nullable<Text>,
        order_id -> Nullable<Text>,
        outcome -> Text,
        detail -> Text,
        payload -> Text,
        provider_created_at -> Nullable<Timestamp>,
        received_at -> Timestamp,
    }
}

diesel::table! {
    payments (id) {
        id -> BigInt,
        channel -> Text,
        payment_id -> Text,
        app_key -> Text,
        user_id -> Text,
        order_id -> Nullable<Text>,
        subscription_id -> Nullable<BigInt>,
        credits_granted -> BigInt,
        amount_paid_minor -> BigInt,
        refunded_minor -> BigInt,
        clawed_back -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    payment_refs (channel, payment_ref) {
        channel -> Text,
        payment_ref -> Text,
        payment -> BigInt,
    }
}

diesel::table! {
    refunds (channel, refund_key) {
        channel -> Text,
        refund_key -> Text,
        payment -> BigInt,
        amount_minor -> BigInt,
        credits -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        app_key -> Text,
        url -> Text,
        description -> Text,
        event_types -> Text,
        wants_spent -> Bool,
        enabled -> Bool,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_expires_at -> Nullable<Timestamp>,
        failing_since -> Nullable<Timestamp>,
        disabled_reason -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_settings (app_key) {
        app_key -> Text,
        low_balance_threshold -> Nullable<BigInt>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_events (seq) {
        seq -> BigInt,
        id -> Text,
        app_key -> Text,
        user_id -> Nullable<Text>,
        event_type -> Text,
        payload -> Text,
        fanned_out -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> BigInt,
        event_seq -> BigInt,
        endpoint_id -> Text,
        app_key -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        first_attempt_at -> Nullable<Timestamp>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> BigInt,
        delivery_id -> BigInt,
        attempted_at -> Timestamp,
        status_code -> Nullable<Integer>,
        latency_ms -> BigInt,
        response_excerpt -> Nullable<Text>,
        error -> Nullable<Text>,
        succeeded -> Bool,
    }
}

diesel::joinable!(webhook_deliveries -> webhook_events (event_seq));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::allow_tables_to_appear_in_same_query!(
    webhook_deliveries,
    webhook_events,
    webhook_endpoints
);

diesel::joinable!(checkins -> transactions (transaction_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    transactions,
    lots,
    checkins,
    checkin_configs
);

diesel::table! {
    console_links (token_hash) {
        token_hash -> Text,
        app_key -> Text,
        operator -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    console_sessions (id_hash) {
        id_hash -> Text,
        app_key -> Text,
        operator -> Text,
        csrf_token -> Text,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
    }
}

diesel::table! {
    portal_sessions (token_hash) {
        token_hash -> Text,
        app_key -> Text,
        user_id -> Text,
        return_url -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    app_branding (app_key) {
        app_key -> Text,
        display_name -> Nullable<Text>,
        accent_color -> Nullable<Text>,
        logo_url -> Nullable<Text>,
        updated_by -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    pricing_features (app_key, feature_key) {
        app_key -> Text,
        feature_key -> Text,
        name -> Text,
        kind -> Text,
        unit -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    pricing_rates (id) {
        id -> BigInt,
        app_key -> Text,
        feature_key -> Text,
        version -> BigInt,
        dimensions -> Text,
        credits -> BigInt,
        per -> BigInt,
        tiers -> Text,
        effective_from -> Timestamp,
        created_at -> Timestamp,
        created_by -> Text,
    }
}

diesel::table! {
    entitlements (app_key, scope, feature_key) {
        app_key -> Text,
        scope -> Text,
        feature_key -> Text,
        included -> Nullable<BigInt>,
        reset -> Text,
        overage -> Text,
        position -> BigInt,
    }
}

diesel::table! {
    allowances (account_id, feature_key, window_start) {
        account_id -> BigInt,
        feature_key -> Text,
        window_start -> Timestamp,
        window_end -> Nullable<Timestamp>,
        included -> BigInt,
        used -> BigInt,
        reserved -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    hold_allowances (hold_id, feature_key) {
        hold_id -> BigInt,
        account_id -> BigInt,
        feature_key -> Text,
        window_start -> Timestamp,
        units -> BigInt,
    }
}

diesel::table! {
    usage_meters (account_id, feature_key) {
        account_id -> BigInt,
        feature_key -> Text,
        quantity -> BigInt,
        charged -> BigInt,
        carry -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    usage_events (id) {
        id -> BigInt,
        account_id -> BigInt,
        app_key -> Text,
        user_id -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        credits -> BigInt,
        transaction_id -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    usage_lines (event_id, feature_key) {
        event_id -> BigInt,
        account_id -> BigInt,
        feature_key -> Text,
        quantity -> BigInt,
        included_used -> BigInt,
        window_start -> Nullable<Timestamp>,
        credits -> BigInt,
        price_whole -> BigInt,
        price_frac -> BigInt,
        rate_id -> Nullable<BigInt>,
        rate_version -> Nullable<BigInt>,
        rate_credits -> Nullable<BigInt>,
        rate_per -> Nullable<BigInt>,
    }
}

diesel::table! {
    pricing_generations (app_key) {
        app_key -> Text,
        generation -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(usage_events, accounts);
diesel::allow_tables_to_appear_in_same_query!(allowances, accounts);
diesel::allow_tables_to_appear_in_same_query!(usage_events, transactions);
diesel::allow_tables_to_appear_in_same_query!(orders, subscriptions);

diesel::table! {
    apps (app_key) {
        app_key -> Text,
        name -> Text,
        time_zone -> Text,
        currency -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    service_keys (id) {
        id -> BigInt,
        app_key -> Text,
        name -> Text,
        key_hash -> Text,
        prefix -> Text,
        created_by -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}
