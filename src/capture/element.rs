//! Making and linking GStreamer elements, with errors that name the element
//! (and the plugin package to install) or the link that failed. The bottom
//! of `capture`: it uses nothing else of the agent.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "GStreamer element `{0}` is missing (install the plugin package that provides it): {1}"
    )]
    Missing(&'static str, String),
    #[error("linking {0}: {1}")]
    Link(String, String),
}

pub fn make(factory: &'static str) -> Result<gst::Element, BuildError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| BuildError::Missing(factory, e.to_string()))
}

pub fn link(a: &gst::Element, b: &gst::Element) -> Result<(), BuildError> {
    a.link(b)
        .map_err(|e| BuildError::Link(format!("{} -> {}", a.name(), b.name()), e.to_string()))
}

pub fn chain(pipeline: &gst::Pipeline, elements: &[&gst::Element]) -> Result<(), BuildError> {
    for e in elements {
        pipeline
            .add(*e)
            .map_err(|err| BuildError::Link(e.name().to_string(), err.to_string()))?;
    }
    for pair in elements.windows(2) {
        link(pair[0], pair[1])?;
    }
    Ok(())
}

pub fn link_pad(el: &gst::Element, sink: &gst::Pad) -> Result<(), BuildError> {
    let src = el
        .static_pad("src")
        .ok_or_else(|| BuildError::Link(el.name().to_string(), "no src pad".into()))?;
    src.link(sink)
        .map(|_| ())
        .map_err(|e| BuildError::Link(format!("{} -> segmenter", el.name()), format!("{e:?}")))
}
