//! Frames between the supervisor and its workers, over each worker's Unix socket.
//!
//! Binary and length-prefixed, never JSON: a request's tensors cross the socket as their raw
//! little-endian bytes. One connection per worker carries many requests at once; replies
//! come back in any order and are matched by request id (the supervisor side is
//! [`crate::router::conn`], the worker side [`crate::worker::server`]).
//!
//! ```text
//! frame    := len:u32le body            len = byte length of body, at most MAX_FRAME
//! body     := kind:u8 id:u64le payload
//! kind       1 Hello       payload = protocol:u16le          supervisor → worker, first frame
//!            2 Ready       payload = info                    worker → supervisor, model loaded
//!            3 LoadFailed  payload = reason:str              worker → supervisor, then exits
//!            4 Infer       payload = tensors                 supervisor → worker
//!            5 Output      payload = timing tensors          worker → supervisor, same id
//!            6 Failed      payload = fault message:str       worker → supervisor, same id
//!            7 Ping        payload = (none)                  supervisor → worker, liveness
//!            8 Pong        payload = (none)                  worker → supervisor, same id
//! fault    := 1 (bad input) | 2 (internal) | 3 output:str (non-finite values in that output)
//! timing   := queued_us:u64le computed_us:u64le batch:u32le leads:u8 plans_built:u32le
//! tensors  := count:u16le tensor*
//! tensor   := name:str dtype:u8 rank:u8 dim:u64le*rank nbytes:u64le bytes
//! info     := load_mode:str plans_built:u32le inputs:specs outputs:specs labels
//! specs    := count:u16le (name:str dtype:u8 rank:u8 dim:i64le*rank)*   (-1 = open dim)
//! labels   := present:u8 [output:str count:u32le str*]
//! str      := len:u32le utf8
//! ```
//!
//! `dtype` is [`DType::code`]; BYTES tensors hold `u32le length + bytes` per element.

mod codec;
pub mod engine;
pub mod manifest;
pub mod progress;

pub use crate::tensor::{DType, Tensor, TensorSpec, Values};
mod io;
mod payload;

pub use io::{read_decoded_blocking, read_frame, recv, send};
pub use payload::encode_infer;

use codec::{Reader, Source, Writer};
use payload::{encode_tensors, read_info, read_tensors, tensors_size, write_info, write_tensors};
use std::time::Duration;

pub use codec::DecodeError;

/// The batch sizes a worker builds plans for (`--buckets` on its command line, from the
/// model's `[model.batching] buckets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buckets {
    /// Every batch size gets its own plan.
    Exact,
    /// Batches are padded up to the next power of two (padding rows dropped from the
    /// outputs), so a handful of plans cover every size.
    Pow2,
}

impl Buckets {
    pub const ALL: [Buckets; 2] = [Buckets::Exact, Buckets::Pow2];

    pub fn from_name(name: &str) -> Option<Buckets> {
        Buckets::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Parses a `--buckets` value; anything else is refused, naming the choices.
    pub fn parse(name: &str) -> Result<Buckets, String> {
        Buckets::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Buckets::ALL.iter().map(|b| b.name()).collect();
            format!("'{name}' is not a bucket policy ({})", names.join(", "))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Buckets::Exact => "exact",
            Buckets::Pow2 => "pow2",
        }
    }

    /// The batch size a plan is built for, for `rows` rows.
    pub fn size_for(self, rows: usize) -> usize {
        match self {
            Buckets::Exact => rows,
            Buckets::Pow2 => rows.max(1).next_power_of_two(),
        }
    }
}

/// Exit status of a worker whose allocation failed under its memory limit: the supervisor
/// counts it as an OOM kill.
pub const OOM_EXIT_CODE: i32 = 86;

/// Bumped when the frame layout changes; a worker refuses a Hello of another version.
pub const PROTOCOL_VERSION: u16 = 6;

/// Largest frame either side accepts (1 GiB): a corrupt length never allocates more.
pub const MAX_FRAME: usize = 1 << 30;

/// What a worker tells the supervisor about the model it loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Which loading strategy worked (see `worker::loader::LoadMode`).
    pub load_mode: String,
    /// Plans built while loading (warm-up, golden examples, plans built ahead).
    pub plans_built: u32,
    /// Where the model runs: "cpu", "cuda:0 (<GPU name>)", or with `cuda-or-cpu` on a
    /// host without a usable GPU, "cpu" and why.
    pub device: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub labels: Option<Labels>,
}

impl ModelInfo {
    /// Whether the model runs on a GPU: its `device` names one (`cuda:0 (…)`), not the CPU
    /// (`cpu`, or `cpu (cuda-or-cpu: …)` where a GPU was asked for and none could be used).
    pub fn on_gpu(&self) -> bool {
        self.device.starts_with("cuda")
    }
}

/// Class names for the columns of one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub output: String,
    pub names: Vec<String>,
}

/// Where a request's time went inside the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// Waiting for an inference thread.
    pub queued: Duration,
    /// Running the model (plan lookup or build included).
    pub computed: Duration,
    /// Rows in the inference run (the request's, or its merged batch's).
    pub batch: u32,
    /// Whether this request is the one that reports its run (the first of its batch), so
    /// a batch is counted once.
    pub leads: bool,
    /// Plans the run had to build.
    pub plans_built: u32,
}

/// Why a worker could not answer one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The request does not fit the model (client error).
    BadInput,
    /// The model failed while running (server error).
    Internal,
    /// The model ran but this output holds NaN or ±Inf, which its model.toml does not
    /// allow: no usable answer (server error).
    NonFinite { output: String },
    /// The model ran but this output breaks what its model.toml declares of it (rows of
    /// `kind = "probabilities"` that are no distribution, a labelled output whose width is
    /// not the number of labels): a wrong answer (server error).
    Contract { output: String },
}

impl Fault {
    /// The output whose values failed the answer, for the faults that name one.
    pub fn output(&self) -> Option<&str> {
        match self {
            Fault::NonFinite { output } | Fault::Contract { output } => Some(output),
            Fault::BadInput | Fault::Internal => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello {
        protocol: u16,
    },
    Ready(ModelInfo),
    LoadFailed {
        reason: String,
    },
    Infer {
        id: u64,
        inputs: Vec<Tensor>,
    },
    Output {
        id: u64,
        timing: Timing,
        outputs: Vec<Tensor>,
    },
    Failed {
        id: u64,
        fault: Fault,
        message: String,
    },
    /// Are you there? Answered with a Pong between requests (the one-thread loop: after
    /// the batch it runs), at once otherwise.
    Ping {
        id: u64,
    },
    Pong {
        id: u64,
    },
}

impl Frame {
    /// Encodes the frame with its length prefix, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_length_prefix();
        match self {
            Frame::Hello { protocol } => {
                w.head(1, 0);
                w.u16(*protocol);
            }
            Frame::Ready(info) => {
                w.head(2, 0);
                write_info(&mut w, info);
            }
            Frame::LoadFailed { reason } => {
                w.head(3, 0);
                w.str(reason);
            }
            Frame::Infer { id, inputs } => return encode_tensors(4, *id, inputs),
            Frame::Output { id, timing, outputs } => {
                let mut w = Writer::with_capacity(tensors_size(outputs) + 36);
                w.head(5, *id);
                w.u64(timing.queued.as_micros() as u64);
                w.u64(timing.computed.as_micros() as u64);
                w.u32(timing.batch);
                w.u8(u8::from(timing.leads));
                w.u32(timing.plans_built);
                write_tensors(&mut w, outputs);
                return w.finish();
            }
            Frame::Failed { id, fault, message } => {
                w.head(6, *id);
                match fault {
                    Fault::BadInput => w.u8(1),
                    Fault::Internal => w.u8(2),
                    Fault::NonFinite { output } => {
                        w.u8(3);
                        w.str(output);
                    }
                    Fault::Contract { output } => {
                        w.u8(4);
                        w.str(output);
                    }
                }
                w.str(message);
            }
            Frame::Ping { id } => w.head(7, *id),
            Frame::Pong { id } => w.head(8, *id),
        }
        w.finish()
    }

    /// Decodes one frame body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = Reader::new(body);
        let frame = Frame::read(&mut r)?;
        r.expect_end()?;
        Ok(frame)
    }

    /// Reads one frame body's fields, from memory or from the socket; what is left after
    /// them is the caller's to refuse.
    fn read(r: &mut impl Source) -> Result<Frame, DecodeError> {
        let kind = r.u8()?;
        let id = r.u64()?;
        let frame = match kind {
            1 => Frame::Hello { protocol: r.u16()? },
            2 => Frame::Ready(read_info(r)?),
            3 => Frame::LoadFailed { reason: r.str()? },
            4 => Frame::Infer { id, inputs: read_tensors(r)? },
            5 => {
                let queued = Duration::from_micros(r.u64()?);
                let computed = Duration::from_micros(r.u64()?);
                let batch = r.u32()?;
                let leads = r.u8()? != 0;
                let timing = Timing { queued, computed, batch, leads, plans_built: r.u32()? };
                Frame::Output { id, timing, outputs: read_tensors(r)? }
            }
            6 => {
                let fault = match r.u8()? {
                    1 => Fault::BadInput,
                    2 => Fault::Internal,
                    3 => Fault::NonFinite { output: r.str()? },
                    4 => Fault::Contract { output: r.str()? },
                    other => return Err(DecodeError::BadValue("fault", u64::from(other))),
                };
                Frame::Failed { id, fault, message: r.str()? }
            }
            7 => Frame::Ping { id },
            8 => Frame::Pong { id },
            other => return Err(DecodeError::BadValue("frame kind", u64::from(other))),
        };
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Values;

    fn round_trip(frame: Frame) {
        let encoded = frame.encode();
        let len = u32::from_le_bytes(encoded[..4].try_into().unwrap()) as usize;
        assert_eq!(len, encoded.len() - 4);
        assert_eq!(Frame::decode(&encoded[4..]).unwrap(), frame);
    }

    #[test]
    fn buckets_round_up() {
        assert_eq!(Buckets::Pow2.size_for(1), 1);
        assert_eq!(Buckets::Pow2.size_for(5), 8);
        assert_eq!(Buckets::Pow2.size_for(64), 64);
        assert_eq!(Buckets::Exact.size_for(5), 5);
        assert_eq!(Buckets::from_name("pow2"), Some(Buckets::Pow2));
        assert_eq!(Buckets::from_name("pow3"), None);
    }

    #[test]
    fn every_frame_kind_round_trips() {
        for (_, frame) in sample_frames() {
            round_trip(frame);
        }
    }

    #[test]
    fn truncated_and_unknown_frames_are_errors() {
        let encoded = Frame::LoadFailed { reason: "oops".into() }.encode();
        assert!(Frame::decode(&encoded[4..encoded.len() - 1]).is_err());
        assert!(Frame::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut trailing = encoded[4..].to_vec();
        trailing.push(0);
        assert!(Frame::decode(&trailing).is_err());
    }

    #[test]
    fn a_frame_read_from_a_stream_is_the_frame_decoded_from_memory() {
        let frames: Vec<Frame> = sample_frames().into_iter().map(|(_, frame)| frame).collect();
        let stream: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut reader = std::io::BufReader::with_capacity(16, &stream[..]);
        for frame in &frames {
            assert_eq!(read_decoded_blocking(&mut reader).unwrap().as_ref(), Some(frame));
        }
        assert!(read_decoded_blocking(&mut reader).unwrap().is_none(), "a clean end between frames");
    }

    #[test]
    fn a_short_long_or_cut_frame_from_a_stream_is_an_error() {
        use std::io::BufReader;
        let t = Tensor::from_values("x", vec![2], Values::F32(vec![1., 2.])).unwrap();
        let encoded = Frame::Infer { id: 1, inputs: vec![t] }.encode();
        let with_len = |body: &[u8], len: usize| [&(len as u32).to_le_bytes()[..], body].concat();
        let body = &encoded[4..];
        // The length says less than the tensor holds: its bytes are not read past the frame.
        let short = with_len(body, body.len() - 1);
        assert_eq!(
            read_decoded_blocking(&mut BufReader::new(&short[..])).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        // More announced than the frame's fields use: trailing bytes.
        let long = with_len(&[body, &[0]].concat(), body.len() + 1);
        assert_eq!(
            read_decoded_blocking(&mut BufReader::new(&long[..])).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        // The stream ends inside the frame.
        let cut = &encoded[..encoded.len() - 3];
        assert!(read_decoded_blocking(&mut BufReader::new(cut)).is_err());
        // A tensor announcing more bytes than the frame has allocates nothing of that size.
        let mut huge = body.to_vec();
        let at = huge.len() - 8 - 8;
        huge[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let huge = with_len(&huge, body.len());
        assert!(read_decoded_blocking(&mut BufReader::new(&huge[..])).is_err());
    }

    #[tokio::test]
    async fn frames_cross_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let frame = Frame::Infer { id: 1, inputs: vec![] };
        let sent = frame.clone();
        tokio::spawn(async move { send(&mut a, &sent).await.unwrap() });
        assert_eq!(recv(&mut b).await.unwrap(), frame);
    }

    /// One frame of each kind (and of each fault, tensor type, empty and labelled case):
    /// the round-trip test's frames and the seeds of the `wire_frame` fuzz target.
    fn sample_frames() -> Vec<(&'static str, Frame)> {
        let t = Tensor::from_values("x", vec![2, 2], Values::F32(vec![1., 2., 3., 4.])).unwrap();
        let s = Tensor::from_values("l", vec![2], Values::Bytes(vec![b"a".to_vec(), b"".to_vec()])).unwrap();
        let i = Tensor::from_values("i", vec![1, 3], Values::I64(vec![-1, 0, i64::MAX])).unwrap();
        let b = Tensor::from_values("b", vec![2], Values::Bool(vec![true, false])).unwrap();
        let info = ModelInfo {
            load_mode: "strict".into(),
            plans_built: 3,
            device: "cuda:0 (NVIDIA H200)".into(),
            inputs: vec![TensorSpec { name: "x".into(), dtype: DType::F32, shape: vec![None, Some(4)] }],
            outputs: vec![TensorSpec { name: "p".into(), dtype: DType::F32, shape: vec![None, Some(2)] }],
            labels: Some(Labels { output: "p".into(), names: vec!["a".into(), "b".into()] }),
        };
        let timing = Timing {
            queued: Duration::from_micros(12),
            computed: Duration::from_micros(3400),
            batch: 2,
            leads: true,
            plans_built: 1,
        };
        vec![
            ("hello", Frame::Hello { protocol: PROTOCOL_VERSION }),
            ("ready", Frame::Ready(info.clone())),
            ("ready_unlabelled", Frame::Ready(ModelInfo { labels: None, outputs: vec![], ..info })),
            ("load_failed", Frame::LoadFailed { reason: "no model.onnx".into() }),
            ("infer", Frame::Infer { id: 7, inputs: vec![t.clone(), s.clone(), i.clone(), b] }),
            ("infer_empty", Frame::Infer { id: 8, inputs: vec![] }),
            ("output", Frame::Output { id: u64::MAX, timing, outputs: vec![t, i, s] }),
            ("failed_bad_input", Frame::Failed { id: 3, fault: Fault::BadInput, message: "no".into() }),
            ("failed_internal", Frame::Failed { id: 4, fault: Fault::Internal, message: "oops".into() }),
            (
                "failed_non_finite",
                Frame::Failed { id: 5, fault: Fault::NonFinite { output: "y".into() }, message: "NaN".into() },
            ),
            (
                "failed_contract",
                Frame::Failed { id: 6, fault: Fault::Contract { output: "p".into() }, message: "sums to 3".into() },
            ),
            ("ping", Frame::Ping { id: 9 }),
            ("pong", Frame::Pong { id: 9 }),
        ]
    }

    /// The fuzz target's seeds (fuzz/seeds/wire_frame, frame bodies without the length
    /// prefix) still decode; `MODELD_WRITE_FUZZ_SEEDS=1 cargo test --lib wire::tests::fuzz_seeds`
    /// writes them afresh after a protocol change.
    #[test]
    fn fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/wire_frame");
        if std::env::var_os("MODELD_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, frame) in sample_frames() {
                std::fs::write(dir.join(name), &frame.encode()[4..]).unwrap();
            }
        }
        for (name, _) in sample_frames() {
            if let Ok(body) = std::fs::read(dir.join(name)) {
                assert!(Frame::decode(&body).is_ok(), "fuzz seed {name} no longer decodes; rewrite the seeds");
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            // No proptest-regressions files beside the source: a failure prints its input.
            ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
        }

        fn dtype() -> impl Strategy<Value = DType> {
            prop::sample::select(DType::ALL.to_vec())
        }

        /// A tensor of any type, with a random shape of up to 3 dimensions and random
        /// elements (random byte strings for BYTES).
        fn tensor() -> impl Strategy<Value = Tensor> {
            (any::<String>(), dtype(), prop::collection::vec(0usize..4, 0..4)).prop_flat_map(|(name, dtype, shape)| {
                let count = crate::tensor::element_count(&shape);
                let data = match dtype.size() {
                    Some(size) => prop::collection::vec(any::<u8>(), count * size).boxed(),
                    None => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), count)
                        .prop_map(|items| Values::Bytes(items).into_bytes())
                        .boxed(),
                };
                data.prop_map(move |data| Tensor { name: name.clone(), dtype, shape: shape.clone(), data })
            })
        }

        fn spec() -> impl Strategy<Value = TensorSpec> {
            let dim = prop::option::of(0..=i64::MAX as usize);
            (any::<String>(), dtype(), prop::collection::vec(dim, 0..5)).prop_map(|(name, dtype, shape)| TensorSpec {
                name,
                dtype,
                shape,
            })
        }

        fn info() -> impl Strategy<Value = ModelInfo> {
            let labels = (any::<String>(), prop::collection::vec(any::<String>(), 0..5))
                .prop_map(|(output, names)| Labels { output, names });
            (
                any::<String>(),
                any::<u32>(),
                any::<String>(),
                prop::collection::vec(spec(), 0..4),
                prop::collection::vec(spec(), 0..4),
                prop::option::of(labels),
            )
                .prop_map(|(load_mode, plans_built, device, inputs, outputs, labels)| ModelInfo {
                    load_mode,
                    plans_built,
                    device,
                    inputs,
                    outputs,
                    labels,
                })
        }

        fn timing() -> impl Strategy<Value = Timing> {
            (any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>(), any::<u32>()).prop_map(
                |(queued, computed, batch, leads, plans_built)| Timing {
                    queued: Duration::from_micros(queued),
                    computed: Duration::from_micros(computed),
                    batch,
                    leads,
                    plans_built,
                },
            )
        }

        fn fault() -> impl Strategy<Value = Fault> {
            prop_oneof![
                Just(Fault::BadInput),
                Just(Fault::Internal),
                any::<String>().prop_map(|output| Fault::NonFinite { output }),
                any::<String>().prop_map(|output| Fault::Contract { output }),
            ]
        }

        fn frame() -> impl Strategy<Value = Frame> {
            let tensors = || prop::collection::vec(tensor(), 0..4);
            prop_oneof![
                any::<u16>().prop_map(|protocol| Frame::Hello { protocol }),
                info().prop_map(Frame::Ready),
                any::<String>().prop_map(|reason| Frame::LoadFailed { reason }),
                (any::<u64>(), tensors()).prop_map(|(id, inputs)| Frame::Infer { id, inputs }),
                (any::<u64>(), timing(), tensors()).prop_map(|(id, timing, outputs)| Frame::Output {
                    id,
                    timing,
                    outputs
                }),
                (any::<u64>(), fault(), any::<String>()).prop_map(|(id, fault, message)| Frame::Failed {
                    id,
                    fault,
                    message
                }),
                any::<u64>().prop_map(|id| Frame::Ping { id }),
                any::<u64>().prop_map(|id| Frame::Pong { id }),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn frames_round_trip(frame in frame()) {
                let encoded = frame.encode();
                let len = u32::from_le_bytes(encoded[..4].try_into().unwrap()) as usize;
                prop_assert_eq!(len, encoded.len() - 4);
                prop_assert_eq!(Frame::decode(&encoded[4..]).unwrap(), frame.clone());
                // The borrowed-tensor encoder writes the same bytes.
                if let Frame::Infer { id, inputs } = &frame {
                    prop_assert_eq!(encode_infer(*id, inputs), encoded.clone());
                }
            }

            /// Every strict prefix of a frame is truncated, and a trailing byte is refused:
            /// a frame's length is exactly what its fields say.
            #[test]
            fn cut_or_padded_frames_are_errors(frame in frame(), extra in any::<u8>()) {
                let body = &frame.encode()[4..];
                for cut in 0..body.len() {
                    prop_assert!(Frame::decode(&body[..cut]).is_err(), "prefix of {} bytes decodes", cut);
                }
                let mut padded = body.to_vec();
                padded.push(extra);
                prop_assert_eq!(Frame::decode(&padded), Err(DecodeError::Trailing(1)));
            }
        }
    }
}
