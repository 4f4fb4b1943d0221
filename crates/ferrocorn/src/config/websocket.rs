//! Settings for the WebSocket protocol the core speaks itself (`crate::websocket`), with
//! Uvicorn's names and defaults. WSGI apps speak WebSocket on `gunicorn.socket` themselves
//! (`crate::tunnel`), with their library's own limits.

use std::time::Duration;

use clap::Args;

/// WebSocket flags, flattened into [`super::Settings`].
#[derive(Debug, Clone, Args)]
pub struct WebSocketSettings {
    /// Largest WebSocket message (and frame) a client may send, in bytes; a larger one closes
    /// the connection with 1009. Frames over 64 KiB are cut into 64 KiB fragments both ways, so
    /// a large message leaves no buffer of its size behind (with large messages over many
    /// connections, run with MALLOC_MMAP_THRESHOLD_=131072 so that glibc gives their memory
    /// back: docs/websockets.md). For the protocol the server speaks itself (ASGI's websocket
    /// scope), not for WSGI apps on gunicorn.socket (their library has its own).
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    pub ws_max_size: u64,

    /// Seconds between the server's pings on an open WebSocket (0: none). For the protocol the
    /// server speaks itself (ASGI's websocket scope).
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0, value_parser = parse_seconds)]
    pub ws_ping_interval: f64,

    /// Seconds a client gets to answer a ping before the connection is closed with 1011.
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0, value_parser = parse_seconds)]
    pub ws_ping_timeout: f64,

    /// Take up permessage-deflate (RFC 7692) when a WebSocket client offers it, as Uvicorn's
    /// option of the same name (false: every offer declined). The server asks for no context
    /// takeover both ways, so an idle connection holds no compression state; a compressed
    /// message counts against --ws-max-size as it inflates. For the protocol the server
    /// speaks itself (ASGI's websocket scope; WSGI apps speak their own on gunicorn.socket).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub ws_per_message_deflate: bool,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{s:?}: give 0 to 86400 seconds"));
    }
    Ok(v)
}

impl WebSocketSettings {
    /// What each WebSocket connection needs of these settings.
    pub fn config(&self) -> crate::websocket::WsConfig {
        let secs = |v: f64| (v > 0.0).then(|| Duration::from_secs_f64(v));
        crate::websocket::WsConfig {
            max_size: usize::try_from(self.ws_max_size).unwrap_or(usize::MAX),
            ping_interval: secs(self.ws_ping_interval),
            ping_timeout: secs(self.ws_ping_timeout).unwrap_or(Duration::from_secs(20)),
            deflate: self.ws_per_message_deflate.then_some(
                crate::websocket::deflate::DeflateConfig {
                    context_takeover: false,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_bounded_and_zero_turns_pings_off() {
        assert_eq!(parse_seconds("2.5"), Ok(2.5));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("nan").is_err());
        assert!(parse_seconds("x").is_err());
        let s = WebSocketSettings {
            ws_max_size: 10,
            ws_ping_interval: 0.0,
            ws_ping_timeout: 1.5,
            ws_per_message_deflate: false,
        };
        let c = s.config();
        assert_eq!(c.max_size, 10);
        assert_eq!(c.ping_interval, None);
        assert_eq!(c.ping_timeout, Duration::from_millis(1500));
        assert_eq!(c.deflate, None);
    }

    #[test]
    fn per_message_deflate_takes_a_value_on_the_command_line_and_in_a_file() {
        use clap::Parser;

        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            ws: WebSocketSettings,
        }
        let parse = |args: &[&str]| {
            let flags = Flags::try_parse_from([&["ferrocorn"], args].concat()).expect("parses");
            flags.ws.config().deflate
        };
        let on = Some(crate::websocket::deflate::DeflateConfig {
            context_takeover: false,
        });
        assert_eq!(parse(&[]), on);
        assert_eq!(parse(&["--ws-per-message-deflate", "true"]), on);
        assert_eq!(parse(&["--ws-per-message-deflate=false"]), None);
        assert_eq!(parse(&["--ws-per-message-deflate", "off"]), None);
        assert!(Flags::try_parse_from(["ferrocorn", "--ws-per-message-deflate=maybe"]).is_err());
        let (args, warnings) = super::super::file::file_args(vec![(
            "ws_per_message_deflate".into(),
            super::super::file::FileValue::Bool(false),
        )]);
        assert_eq!(args, ["--ws-per-message-deflate=false"]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
