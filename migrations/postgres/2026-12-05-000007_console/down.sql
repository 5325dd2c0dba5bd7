DROP TABLE app_branding;
DROP TABLE portal_sessions;
DROP TABLE console_sessions;
DROP TABLE console_links;
