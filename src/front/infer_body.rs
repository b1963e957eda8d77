//! An OIP infer body as read, before its tensors are built: read in one pass where it can
//! be, by serde where it cannot.
//!
//! The one pass ([`super::reader`]) reads the envelope member by member and, when an
//! input's `datatype` comes before its `data` (as every client library writes it) and is
//! a float type, scans the numbers straight into a typed vector ([`super::floats`]).
//! Anything it does not take — `data` before `datatype`, integer or string data, an
//! unusual body, a malformed one — is read by serde with `data` kept as raw text, which
//! takes the same bodies to the same meaning and words every error.

use super::floats;
use super::reader::Reader;
use crate::tensor::{DType, Values};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

#[derive(Deserialize)]
pub struct Body<'a> {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(borrow)]
    pub inputs: Vec<Input<'a>>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    pub parameters: RequestParameters,
}

/// Request-level parameters modeld reads; others are allowed and ignored.
#[derive(Deserialize, Default)]
pub struct RequestParameters {
    /// Every output as binary data, unless an output says otherwise.
    #[serde(default)]
    pub binary_data_output: bool,
}

#[derive(Deserialize)]
pub struct Input<'a> {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(borrow, default, deserialize_with = "raw_data")]
    pub data: InputData<'a>,
    #[serde(default)]
    pub parameters: InputParameters,
}

/// An input's `data` member.
#[derive(Default)]
pub enum InputData<'a> {
    /// None given (or `null`): the bytes may follow the JSON header.
    #[default]
    Absent,
    /// The raw JSON, to be parsed for the input's datatype.
    Text(&'a str),
    /// Already scanned for the input's (float) datatype.
    Scanned(Values),
}

#[derive(Deserialize, Default)]
pub struct InputParameters {
    /// The input's bytes follow the JSON header instead of a `data` field.
    #[serde(default)]
    pub binary_data_size: Option<u64>,
}

#[derive(Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: OutputParameters,
}

#[derive(Deserialize, Default)]
pub struct OutputParameters {
    #[serde(default)]
    pub binary_data: Option<bool>,
    /// Triton's classification extension: the output's K largest classes instead of it.
    #[serde(default)]
    pub classification: Option<i64>,
}

/// Reads an infer body's JSON.
pub fn read(json: &[u8]) -> Result<Body<'_>, serde_json::Error> {
    match one_pass(json) {
        Some(body) => Ok(body),
        None => serde_json::from_slice(json),
    }
}

fn raw_data<'de, D: Deserializer<'de>>(d: D) -> Result<InputData<'de>, D::Error> {
    Ok(Option::<&'de RawValue>::deserialize(d)?.map_or(InputData::Absent, |raw| InputData::Text(raw.get())))
}

fn one_pass(json: &[u8]) -> Option<Body<'_>> {
    let mut reader = Reader::new(json);
    let (mut id, mut inputs, mut outputs, mut parameters) = (None, None, None, None);
    reader.object(|r, key| match &*key {
        "id" => once(&mut id, r.value::<Option<String>>()?),
        "inputs" => once(&mut inputs, read_inputs(r)?),
        "outputs" => once(&mut outputs, r.value::<Option<Vec<RequestedOutput>>>()?),
        "parameters" => once(&mut parameters, r.value::<RequestParameters>()?),
        _ => r.skip().map(drop),
    })?;
    reader.end()?;
    Some(Body {
        id: id.flatten(),
        inputs: inputs?,
        outputs: outputs.flatten(),
        parameters: parameters.unwrap_or_default(),
    })
}

/// Fills `slot`, refusing a second value (serde refuses duplicate fields; so does this).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

fn read_inputs<'a>(r: &mut Reader<'a>) -> Option<Vec<Input<'a>>> {
    let mut inputs = Vec::new();
    r.array(|r| read_input(r).map(|input| inputs.push(input)))?;
    Some(inputs)
}

fn read_input<'a>(r: &mut Reader<'a>) -> Option<Input<'a>> {
    let (mut name, mut shape, mut datatype, mut data, mut parameters) = (None, None, None::<String>, None, None);
    r.object(|r, key| match &*key {
        "name" => once(&mut name, r.value::<String>()?),
        "shape" => once(&mut shape, r.value::<Vec<i64>>()?),
        "datatype" => once(&mut datatype, r.value::<String>()?),
        "data" => {
            let read = read_data(r, datatype.as_deref())?;
            once(&mut data, read)
        }
        "parameters" => once(&mut parameters, r.value::<InputParameters>()?),
        _ => r.skip().map(drop),
    })?;
    Some(Input {
        name: name?,
        shape: shape?,
        datatype: datatype?,
        data: data.unwrap_or_default(),
        parameters: parameters.unwrap_or_default(),
    })
}

/// An input's data, scanned in place when its datatype, read before it, is a float type.
fn read_data<'a>(r: &mut Reader<'a>, datatype: Option<&str>) -> Option<InputData<'a>> {
    if r.null() {
        return Some(InputData::Absent);
    }
    let (bytes, at) = r.position();
    match datatype.and_then(DType::from_oip_name).and_then(|dtype| floats::parse_prefix(bytes, at, dtype)) {
        Some((parsed, end)) => {
            r.seek(end);
            Some(InputData::Scanned(parsed.values))
        }
        None => r.skip().map(InputData::Text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(body: &Body) -> Vec<bool> {
        body.inputs.iter().map(|i| matches!(i.data, InputData::Scanned(_))).collect()
    }

    #[test]
    fn float_data_after_its_datatype_is_scanned_in_the_same_pass() {
        let json = br#"{"id": "7", "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2], "extra": {"k": [1]}},
            {"name": "n", "shape": [1], "datatype": "INT64", "data": [3]},
            {"name": "late", "shape": [1], "data": [4.5], "datatype": "FP64"},
            {"name": "b", "shape": [1], "datatype": "FP32", "data": null, "parameters": {"binary_data_size": 4}}
        ], "outputs": [{"name": "y", "parameters": {"binary_data": true, "classification": 2}}], "parameters": {"binary_data_output": true}}"#;
        let body = one_pass(json).expect("read in one pass");
        assert_eq!(scanned(&body), [true, false, false, false]);
        assert!(matches!(&body.inputs[0].data, InputData::Scanned(Values::F32(v)) if v == &[1.5, 2.0]));
        assert!(matches!(body.inputs[1].data, InputData::Text("[3]")));
        assert!(matches!(body.inputs[2].data, InputData::Text("[4.5]")));
        assert!(matches!(body.inputs[3].data, InputData::Absent));
        assert_eq!(body.inputs[3].parameters.binary_data_size, Some(4));
        assert_eq!(body.id.as_deref(), Some("7"));
        assert_eq!(body.outputs.as_ref().unwrap()[0].parameters.binary_data, Some(true));
        assert_eq!(body.outputs.as_ref().unwrap()[0].parameters.classification, Some(2));
        assert!(body.parameters.binary_data_output);
    }

    /// The values an input's data stands for, parsed as its datatype.
    fn values(input: &Input) -> Option<Values> {
        let dtype = DType::from_oip_name(&input.datatype).unwrap();
        match &input.data {
            InputData::Absent => None,
            InputData::Text(text) => Some(super::super::json::parse(text, dtype).unwrap().values),
            InputData::Scanned(values) => Some(values.clone()),
        }
    }

    #[test]
    fn the_one_pass_reads_what_serde_reads() {
        for json in [
            &br#"{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[0.1, -2e-3, 7]]}]}"#[..],
            br#" { "parameters" : { "binary_data_output" : false , "other": [null] } ,
                  "inputs" : [ { "parameters": {}, "datatype" : "FP64", "data" : 1.25, "shape" : [ ] , "name" : "s" } ] } "#,
            br#"{"inputs": [{"name": "t\u00e9", "shape": [2], "datatype": "BYTES", "data": ["a", "b\"c"]},
                            {"name": "u", "shape": [2], "datatype": "UINT8", "data": [0, 255]}],
                 "outputs": null, "id": null}"#,
        ] {
            let ours = one_pass(json).expect("read in one pass");
            let serde: Body = serde_json::from_slice(json).unwrap();
            assert_eq!(ours.id, serde.id);
            assert_eq!(ours.outputs.is_some(), serde.outputs.is_some());
            assert_eq!(ours.parameters.binary_data_output, serde.parameters.binary_data_output);
            assert_eq!(ours.inputs.len(), serde.inputs.len());
            for (a, b) in ours.inputs.iter().zip(&serde.inputs) {
                assert_eq!((&a.name, &a.shape, &a.datatype), (&b.name, &b.shape, &b.datatype));
                assert_eq!(a.parameters.binary_data_size, b.parameters.binary_data_size);
                assert_eq!(values(a), values(b));
            }
        }
    }

    /// What the one pass does not take goes to serde, which reads it or words the error.
    #[test]
    fn unusual_and_malformed_bodies_go_to_serde() {
        let nan = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["NaN"]}]}"#;
        assert!(matches!(one_pass(nan).unwrap().inputs[0].data, InputData::Text(_)));
        for (json, error) in [
            (
                &br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "inputs": []}"#[..],
                "duplicate field `inputs`",
            ),
            (br#"{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}"#, "missing field `name`"),
            (br#"{"inputs": [{"name": "x", "shape": [-1.5], "datatype": "FP32", "data": [1]}]}"#, "invalid type"),
            (br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1,]}]}"#, "expected value"),
            (br#"{"inputs": []} x"#, "trailing characters"),
            (br#"{"id": 5, "inputs": []}"#, "invalid type"),
        ] {
            assert!(one_pass(json).is_none(), "{}", String::from_utf8_lossy(json));
            let message = read(json).err().expect("serde refuses it").to_string();
            assert!(message.contains(error), "{message}");
        }
    }
}
