//! The payloads inside frames: tensors, tensor specs and a model's description, each
//! written and read field by field (bounds-checked, never trusting a count).

use super::codec::{DecodeError, Source, Writer};
use super::{DType, Labels, ModelInfo, Tensor, TensorSpec};

/// Encodes an Infer frame straight from borrowed tensors (the router keeps its request's
/// tensors to retry it on another worker).
pub fn encode_infer(id: u64, inputs: &[Tensor]) -> Vec<u8> {
    encode_tensors(4, id, inputs)
}

pub(super) fn tensors_size(tensors: &[Tensor]) -> usize {
    tensors.iter().map(|t| t.data.len() + t.name.len() + 8 * t.shape.len() + 16).sum::<usize>()
}

pub(super) fn encode_tensors(kind: u8, id: u64, tensors: &[Tensor]) -> Vec<u8> {
    let mut w = Writer::with_capacity(tensors_size(tensors) + 16);
    w.head(kind, id);
    write_tensors(&mut w, tensors);
    w.finish()
}

pub(super) fn write_tensors(w: &mut Writer, tensors: &[Tensor]) {
    w.u16(tensors.len() as u16);
    for t in tensors {
        w.str(&t.name);
        w.u8(t.dtype.code());
        w.u8(t.shape.len() as u8);
        for d in &t.shape {
            w.u64(*d as u64);
        }
        w.u64(t.data.len() as u64);
        w.bytes(&t.data);
    }
}

pub(super) fn read_tensors(r: &mut impl Source) -> Result<Vec<Tensor>, DecodeError> {
    let count = r.u16()? as usize;
    let mut out = room_for(count);
    for _ in 0..count {
        let name = r.str()?;
        let dtype = read_dtype(r)?;
        let rank = r.u8()? as usize;
        let shape = (0..rank).map(|_| r.u64().map(|d| d as usize)).collect::<Result<_, _>>()?;
        let len = r.u64()? as usize;
        let data = r.owned(len)?;
        out.push(Tensor { name, dtype, shape, data });
    }
    Ok(out)
}

/// A list with room for the `count` items a frame announces, up to what a real frame
/// holds: a hostile count of 65,535 reserves nothing of that size.
pub(super) fn room_for<T>(count: usize) -> Vec<T> {
    Vec::with_capacity(count.min(64))
}

pub(super) fn read_dtype(r: &mut impl Source) -> Result<DType, DecodeError> {
    let code = r.u8()?;
    DType::from_code(code).ok_or(DecodeError::BadValue("dtype", u64::from(code)))
}

pub(super) fn write_specs(w: &mut Writer, specs: &[TensorSpec]) {
    w.u16(specs.len() as u16);
    for s in specs {
        w.str(&s.name);
        w.u8(s.dtype.code());
        w.u8(s.shape.len() as u8);
        for d in s.oip_shape() {
            w.i64(d);
        }
    }
}

pub(super) fn read_specs(r: &mut impl Source) -> Result<Vec<TensorSpec>, DecodeError> {
    let count = r.u16()? as usize;
    let mut out = room_for(count);
    for _ in 0..count {
        let name = r.str()?;
        let dtype = read_dtype(r)?;
        let rank = r.u8()? as usize;
        let shape = (0..rank).map(|_| r.i64().map(|d| usize::try_from(d).ok())).collect::<Result<_, _>>()?;
        out.push(TensorSpec { name, dtype, shape });
    }
    Ok(out)
}

pub(super) fn write_info(w: &mut Writer, info: &ModelInfo) {
    w.str(&info.load_mode);
    w.u32(info.plans_built);
    w.str(&info.device);
    write_specs(w, &info.inputs);
    write_specs(w, &info.outputs);
    match &info.labels {
        None => w.u8(0),
        Some(labels) => {
            w.u8(1);
            w.str(&labels.output);
            w.u32(labels.names.len() as u32);
            for n in &labels.names {
                w.str(n);
            }
        }
    }
}

pub(super) fn read_info(r: &mut impl Source) -> Result<ModelInfo, DecodeError> {
    let load_mode = r.str()?;
    let plans_built = r.u32()?;
    let device = r.str()?;
    let inputs = read_specs(r)?;
    let outputs = read_specs(r)?;
    let labels = match r.u8()? {
        0 => None,
        _ => {
            let output = r.str()?;
            let count = r.u32()? as usize;
            let names = (0..count).map(|_| r.str()).collect::<Result<_, _>>()?;
            Some(Labels { output, names })
        }
    };
    Ok(ModelInfo { load_mode, plans_built, device, inputs, outputs, labels })
}
