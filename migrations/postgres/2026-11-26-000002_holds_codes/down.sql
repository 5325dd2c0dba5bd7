DROP TABLE redeem_failures;
DROP TABLE redemptions;
DROP TABLE redemption_codes;
DROP TABLE holds;
