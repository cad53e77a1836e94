//! Outgoing mail: password reset links by SMTP when it is configured, else to the server log
//! (where an operator on the host can read them).

use std::time::Duration;

use lettre::message::{Mailbox, header};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Settings;

pub async fn send_reset_link(settings: &Settings, to: &str, link: &str) {
    let Some(smtp) = &settings.smtp else {
        tracing::warn!(
            email = to,
            "password reset requested; no SMTP configured, so the link is here: {link}"
        );
        return;
    };
    match send(&smtp.url, &smtp.from, to, link).await {
        Ok(()) => tracing::info!(email = to, "password reset link sent"),
        Err(e) => tracing::error!(email = to, error = %e, "sending the password reset mail failed"),
    }
}

async fn send(url: &str, from: &str, to: &str, link: &str) -> Result<(), String> {
    let from: Mailbox = from.parse().map_err(|e| format!("bad From address: {e}"))?;
    let to: Mailbox = to.parse().map_err(|e| format!("bad recipient: {e}"))?;
    let text = format!(
        "Someone asked to reset the password of this account.\n\n\
         To choose a new password, open this link within 30 minutes:\n{link}\n\n\
         If it was not you, ignore this mail; the password stays as it is.\n"
    );
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject("Reset your Rustploy password")
        .header(header::ContentType::TEXT_PLAIN)
        .body(text)
        .map_err(|e| e.to_string())?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| format!("bad SMTP URL: {e}"))?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
