//! The output's encoding side: line protocol batches for the shared
//! delivery machinery (`alumet_delivery::DeliveryOutput`), which buffers,
//! batches, retries and counts.

use alumet::measurement::MeasurementPoint;
use alumet::metrics::MetricRegistry;
use alumet_delivery::BatchEncoder;

use crate::line_protocol::{LineProtocolEncoder, SkipReason};

/// Line protocol lines, one per point, appended to one body.
#[derive(Debug)]
pub struct LineProtocolBatch {
    encoder: LineProtocolEncoder,
    body: Vec<u8>,
    points: usize,
}

impl LineProtocolBatch {
    /// Batches of lines written by `encoder`.
    pub fn new(encoder: LineProtocolEncoder) -> Self {
        Self {
            encoder,
            body: Vec::new(),
            points: 0,
        }
    }
}

impl BatchEncoder for LineProtocolBatch {
    type Skip = SkipReason;

    fn add(
        &mut self,
        point: &MeasurementPoint,
        metrics: &MetricRegistry,
    ) -> Result<(), SkipReason> {
        self.encoder.encode(point, metrics, &mut self.body)?;
        self.points += 1;
        Ok(())
    }

    fn points(&self) -> usize {
        self.points
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        // `out` comes sized like the previous body: the next batch reuses it.
        std::mem::swap(&mut self.body, out);
        self.points = 0;
    }

    fn format(&self) -> &'static str {
        "influx-line-protocol"
    }

    fn concatenable(&self) -> bool {
        true
    }
}
