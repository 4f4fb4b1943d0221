//! Which interface the app speaks (WSGI or ASGI), and for ASGI apps the event loop and the
//! lifespan protocol.

use clap::{Args, ValueEnum};

/// `--interface`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Interface {
    /// ASGI when the app (or its `__call__`) is a coroutine function, WSGI otherwise.
    Auto,
    Wsgi,
    Asgi,
}

impl Interface {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Wsgi => "wsgi",
            Self::Asgi => "asgi",
        }
    }
}

/// `--loop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventLoop {
    /// uvloop when it is installed, else asyncio's own.
    Auto,
    Asyncio,
    Uvloop,
}

impl EventLoop {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Asyncio => "asyncio",
            Self::Uvloop => "uvloop",
        }
    }
}

/// `--lifespan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lifespan {
    /// Run it; an app that raises before answering `lifespan.startup` is served without it.
    Auto,
    /// Run it; an app that does not support it stops the start.
    On,
    /// Do not run it.
    Off,
}

impl Lifespan {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// Interface settings, flattened into [`super::Settings`].
#[derive(Debug, Clone, Args)]
pub struct AsgiSettings {
    /// The interface the app speaks. auto: an `async def` callable (or an object whose
    /// `__call__` is one) is an ASGI 3 app, anything else WSGI. `-k asgi` and Uvicorn's worker
    /// classes mean asgi. ASGI apps run on one asyncio event loop per worker (docs/asgi.md)
    #[arg(long, value_name = "INTERFACE", value_enum, default_value_t = Interface::Auto, ignore_case = true)]
    pub interface: Interface,

    /// The event loop of ASGI apps: auto picks uvloop when it is installed, else asyncio's
    #[arg(long = "loop", id = "loop", value_name = "LOOP", value_enum, default_value_t = EventLoop::Auto, ignore_case = true)]
    pub event_loop: EventLoop,

    /// ASGI's lifespan protocol (startup before a worker accepts, shutdown when it stops).
    /// auto: run it, and serve without it an app that raises before answering startup; on:
    /// such an app stops the start; off: never run it. A failed startup stops the server
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Lifespan::Auto, ignore_case = true)]
    pub lifespan: Lifespan,
}

impl super::Settings {
    /// The interface asked for: `-k asgi` (or one of Uvicorn's classes) means ASGI.
    pub fn interface(&self) -> Result<Interface, String> {
        match (self.ops.worker_class, self.asgi.interface) {
            (super::ops::WorkerClass::Asgi, Interface::Wsgi) => Err(
                "-k asgi (an ASGI worker class) and --interface wsgi contradict each other".into(),
            ),
            (super::ops::WorkerClass::Asgi, _) => Ok(Interface::Asgi),
            (_, interface) => Ok(interface),
        }
    }
}
