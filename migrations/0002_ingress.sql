-- Ingress: where a domain came from, and what RouterSync learnt of its certificate.
-- 'base' rows are the <app>.<base domain> hosts RouterSync keeps in step with the setting.
ALTER TABLE domains ADD COLUMN source TEXT NOT NULL DEFAULT 'user' CHECK (source IN ('user', 'base'));
ALTER TABLE domains ADD COLUMN cert_issuer TEXT;
ALTER TABLE domains ADD COLUMN cert_not_after INTEGER;
