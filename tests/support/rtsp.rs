//! In-process RTSP server for integration tests.
//!
//! [`RtspServer::start`] serves a live, server-encoded test stream at
//! `rtsp://127.0.0.1:{port}/cam` on a free loopback port. Every server runs its
//! own `glib::MainLoop` on its own thread with its own `glib::MainContext`, so
//! several servers can live in one test process. [`RtspServer::stop`] (also run
//! on drop) closes every connected client, removes all sessions and closes the
//! listening socket, so a connected client sees its source fail. Every wait
//! in here is bounded. [`RtspServer::start_with`] requires RTSP digest
//! authentication; [`RtspServer::set_size`] changes the picture size
//! mid-stream, as a reconfigured camera does.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::TcpListener;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_rtsp_server as gst_rtsp_server;

use gst::glib;
use gst_rtsp_server::prelude::*;

/// Path of the served stream.
pub const MOUNT: &str = "/cam";

/// Upper bound for starting and for stopping a server.
const TIMEOUT: Duration = Duration::from_secs(10);

/// UDP ports (on 127.0.0.1) for RTP/RTCP; ports in use are skipped.
const UDP_PORTS: (u16, u16) = (20000, 59999);

/// How often a free port is looked for before giving up.
const START_ATTEMPTS: usize = 20;

/// Video codec the test server encodes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    /// GStreamer encoder element.
    pub fn encoder(self) -> &'static str {
        match self {
            Codec::H264 => "x264enc",
            Codec::H265 => "x265enc",
        }
    }

    /// GStreamer RTP payloader element.
    pub fn payloader(self) -> &'static str {
        match self {
            Codec::H264 => "rtph264pay",
            Codec::H265 => "rtph265pay",
        }
    }

    /// GStreamer RTP depayloader element (for client pipelines).
    pub fn depayloader(self) -> &'static str {
        match self {
            Codec::H264 => "rtph264depay",
            Codec::H265 => "rtph265depay",
        }
    }

    /// GStreamer parser element (for client pipelines).
    pub fn parser(self) -> &'static str {
        match self {
            Codec::H264 => "h264parse",
            Codec::H265 => "h265parse",
        }
    }
}

/// The media factory launch line: a live test pattern encoded with a 1 s GOP.
fn launch_line(codec: Codec, width: u32, height: u32, fps: u32) -> String {
    format!(
        "( videotestsrc is-live=true \
         ! capsfilter name=size caps=video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 \
         ! {enc} tune=zerolatency speed-preset=ultrafast key-int-max={fps} \
         ! {pay} name=pay0 pt=96 config-interval=1 )",
        enc = codec.encoder(),
        pay = codec.payloader(),
    )
}

/// The media being served and the picture size asked for.
#[derive(Default)]
struct Resize {
    media: Option<gst::Element>,
    size: Option<(u32, u32)>,
}

/// Sets the size filter of a media's pipeline to `width`×`height`.
fn resize(media: &gst::Element, width: u32, height: u32) {
    let filter = media
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("size"))
        .expect("the stream has a size filter");
    let mut caps = filter.property::<gst::Caps>("caps");
    if let Some(s) = caps.make_mut().structure_mut(0) {
        s.set("width", width as i32);
        s.set("height", height as i32);
    }
    filter.set_property("caps", &caps);
}

/// Serves `factory` only to clients that authenticate as `user` (digest).
fn require_login(
    server: &gst_rtsp_server::RTSPServer,
    factory: &gst_rtsp_server::RTSPMediaFactory,
    user: &str,
    password: &str,
) {
    const ROLE: &str = "camera-viewer";
    let auth = gst_rtsp_server::RTSPAuth::new();
    auth.set_supported_methods(gst_rtsp_server::gst_rtsp::RTSPAuthMethod::Digest);
    let token = gst_rtsp_server::RTSPToken::builder()
        .field(gst_rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
        .build();
    auth.add_digest(user, password, &token);
    server.set_auth(Some(&auth));
    let role = gst::Structure::builder(ROLE)
        .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
        .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
        .build();
    factory.add_role_from_structure(&role);
}

/// A free TCP port on 127.0.0.1 (free at the time of asking).
fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Everything that lives while the server runs.
struct Running {
    server: gst_rtsp_server::RTSPServer,
    main_loop: glib::MainLoop,
    context: glib::MainContext,
    /// The listening socket's source and the session-pool cleanup watch.
    sources: Vec<glib::Source>,
    thread: JoinHandle<()>,
}

/// Digest credentials a server requires (user, password).
pub type Login<'a> = Option<(&'a str, &'a str)>;

/// An RTSP server serving one live test stream on 127.0.0.1.
pub struct RtspServer {
    port: u16,
    running: Option<Running>,
    /// The media being served and the size asked for.
    size: Arc<Mutex<Resize>>,
}

impl RtspServer {
    /// Serves a live test stream at `rtsp://127.0.0.1:{free port}/cam`, encoded
    /// by the server (`videotestsrc is-live=true ! I420 ! x264enc/x265enc
    /// tune=zerolatency speed-preset=ultrafast key-int-max=fps !
    /// rtph264pay/rtph265pay config-interval=1 pt=96`), shared between clients.
    ///
    /// Panics (with the reason) when GStreamer or a needed element is missing
    /// or no port could be bound.
    pub fn start(codec: Codec, width: u32, height: u32, fps: u32) -> RtspServer {
        Self::start_with(codec, width, height, fps, None)
    }

    /// Like [`RtspServer::start`], but the stream is served only to a
    /// client that authenticates (RTSP digest) with `login`.
    pub fn start_with(codec: Codec, width: u32, height: u32, fps: u32, login: Login) -> RtspServer {
        assert!(width > 0 && height > 0 && fps > 0, "bad stream geometry");
        gst::init().expect("GStreamer failed to initialise");
        for element in ["videotestsrc", codec.encoder(), codec.payloader()] {
            assert!(
                gst::ElementFactory::find(element).is_some(),
                "GStreamer element {element} is missing (install the GStreamer plugins)"
            );
        }
        let launch = launch_line(codec, width, height, fps);
        let mut last_error = String::from("no attempt made");
        for _ in 0..START_ATTEMPTS {
            let port = match free_port() {
                Ok(port) => port,
                Err(err) => {
                    last_error = format!("no free port: {err}");
                    continue;
                }
            };
            match Self::try_start(&launch, port, login) {
                Ok(server) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("could not start the RTSP test server: {last_error}");
    }

    /// Like [`RtspServer::start`] but on a given port (to bring a stopped
    /// camera back at the same URL); retries for up to 10 s while the port
    /// is still held by the previous server.
    pub fn start_on(port: u16, codec: Codec, width: u32, height: u32, fps: u32) -> RtspServer {
        gst::init().expect("GStreamer failed to initialise");
        let launch = launch_line(codec, width, height, fps);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::try_start(&launch, port, None) {
                Ok(server) => return server,
                Err(err) if Instant::now() > deadline => {
                    panic!("could not restart the RTSP test server on {port}: {err}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn try_start(launch: &str, port: u16, login: Login) -> Result<RtspServer, String> {
        let server = gst_rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());

        let mounts = server
            .mount_points()
            .ok_or("the RTSP server has no mount points")?;
        let factory = gst_rtsp_server::RTSPMediaFactory::new();
        factory.set_launch(launch);
        factory.set_shared(true);
        // RTP/RTCP over UDP binds to the pool's address: loopback only
        // (without a pool the server binds its UDP ports to every interface).
        let udp = gst_rtsp_server::RTSPAddressPool::new();
        udp.add_range("127.0.0.1", "127.0.0.1", UDP_PORTS.0, UDP_PORTS.1, 0)
            .map_err(|err| format!("cannot set up the UDP port range: {err}"))?;
        factory.set_address_pool(Some(&udp));
        if let Some((user, password)) = login {
            require_login(&server, &factory, user, password);
        }
        // Every media made (again, after the last client left) takes the
        // size last asked for.
        let size = Arc::new(Mutex::new(Resize::default()));
        let wanted = size.clone();
        factory.connect_media_configure(move |_, media| {
            let mut r = wanted.lock().unwrap_or_else(|e| e.into_inner());
            r.media = Some(media.element());
            if let Some((w, h)) = r.size {
                resize(&media.element(), w, h);
            }
        });
        mounts.add_factory(MOUNT, factory);

        let context = glib::MainContext::new();
        // Creating the source binds and listens: a port taken meanwhile fails
        // here and the caller retries with another one.
        let listen = server
            .create_source(None::<&gst_rtsp_server::gio::Cancellable>)
            .map_err(|err| format!("cannot listen on 127.0.0.1:{port}: {err}"))?;
        listen.attach(Some(&context));
        let mut sources = vec![listen];
        if let Some(pool) = server.session_pool() {
            let watch = pool.create_watch(None, glib::Priority::DEFAULT, |pool| {
                pool.cleanup();
                glib::ControlFlow::Continue
            });
            watch.attach(Some(&context));
            sources.push(watch);
        }

        let main_loop = glib::MainLoop::new(Some(&context), false);
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let thread = {
            let context = context.clone();
            let main_loop = main_loop.clone();
            std::thread::Builder::new()
                .name(format!("rtsp-test-{port}"))
                .spawn(move || {
                    let ran = context.with_thread_default(|| {
                        let ready = glib::idle_source_new(
                            Some("rtsp-test-ready"),
                            glib::Priority::DEFAULT,
                            move || {
                                let _ = ready_tx.send(());
                                glib::ControlFlow::Break
                            },
                        );
                        ready.attach(Some(&context));
                        main_loop.run();
                    });
                    if let Err(err) = ran {
                        eprintln!("RTSP test server: cannot own its main context: {err}");
                    }
                })
                .map_err(|err| format!("cannot spawn the main loop thread: {err}"))?
        };
        let running = Running {
            server,
            main_loop,
            context,
            sources,
            thread,
        };
        let server = RtspServer {
            port,
            running: Some(running),
            size,
        };
        // The main loop must run before start() returns: quitting a loop that
        // has not started yet would be lost and the thread would never end.
        ready_rx
            .recv_timeout(TIMEOUT)
            .map_err(|err| format!("the main loop did not start: {err}"))?;
        Ok(server)
    }

    /// The stream's URL, `rtsp://127.0.0.1:{port}/cam`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{MOUNT}", self.port)
    }

    /// Changes the served picture size mid-stream (the encoder starts anew
    /// with new parameter sets, as a camera does when reconfigured); media
    /// made later (a client reconnecting) keep the new size.
    pub fn set_size(&self, width: u32, height: u32) {
        let mut r = self.size.lock().unwrap_or_else(|e| e.into_inner());
        r.size = Some((width, height));
        if let Some(media) = &r.media {
            resize(media, width, height);
        }
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops serving: connected clients are closed, their sessions removed
    /// (the media pipeline stops) and the listening socket is closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let Running {
            server,
            main_loop,
            context,
            sources,
            thread,
        } = running;
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let loop_in_closure = main_loop.clone();
        context.invoke(move || {
            // Close every client connection (RTSPFilterResult::Remove calls
            // gst_rtsp_client_close), then drop any session left over.
            let _ =
                server.client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
            if let Some(pool) = server.session_pool() {
                let _ = pool.filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
            }
            // Destroying the listening source drops the server's socket.
            for source in sources {
                source.destroy();
            }
            loop_in_closure.quit();
            let _ = done_tx.send(());
        });
        if done_rx.recv_timeout(TIMEOUT).is_err() {
            eprintln!("RTSP test server on port {}: cleanup timed out", self.port);
            main_loop.quit();
        }
        let deadline = Instant::now() + TIMEOUT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            if thread.join().is_err() {
                eprintln!("RTSP test server on port {}: main loop panicked", self.port);
            }
        } else {
            // Leave the thread behind rather than hang the test run.
            eprintln!(
                "RTSP test server on port {}: main loop did not stop within {TIMEOUT:?}",
                self.port
            );
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
