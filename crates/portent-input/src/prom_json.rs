//! Prometheus HTTP API responses: `query_range` (matrix) and `query` (vector).

use std::borrow::Cow;
use std::collections::HashMap;

use portent_core::{Labels, Sample, Series, Timestamp};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::error::InputError;
use crate::timestamp::{MAX_MILLIS, MIN_MILLIS};
use crate::value::parse_value;

/// The envelope every API response has.
#[derive(Deserialize)]
#[serde(expecting = "a Prometheus API response object")]
struct Response<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result")]
enum Data<'a> {
    #[serde(rename = "matrix", borrow)]
    Matrix(Vec<RangeSeries<'a>>),
    #[serde(rename = "vector", borrow)]
    Vector(Vec<InstantSample<'a>>),
    #[serde(rename = "scalar")]
    Scalar(IgnoredAny),
    #[serde(rename = "string")]
    String(IgnoredAny),
}

type Metric<'a> = HashMap<Cow<'a, str>, Cow<'a, str>>;

#[derive(Deserialize)]
struct RangeSeries<'a> {
    #[serde(default, borrow)]
    metric: Metric<'a>,
    #[serde(default, borrow)]
    values: Vec<Point<'a>>,
    #[serde(default)]
    histograms: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct InstantSample<'a> {
    #[serde(default, borrow)]
    metric: Metric<'a>,
    #[serde(default, borrow)]
    value: Option<Point<'a>>,
    #[serde(default)]
    histogram: Option<IgnoredAny>,
}

/// `[<unix seconds>, "<value>"]`.
#[derive(Deserialize)]
struct Point<'a>(f64, #[serde(borrow)] Cow<'a, str>);

/// One element of `data.result`, matrix or vector alike.
struct RawSeries<'a> {
    metric: Metric<'a>,
    points: Vec<Point<'a>>,
    histograms: bool,
    /// From a vector: its one point is `value`, not `values[i]`.
    instant: bool,
}

/// Reads a Prometheus API response (no byte-order mark) into its series.
pub(crate) fn read_prom_json(input: &[u8]) -> Result<Vec<Series>, InputError> {
    // serde would take `[...]` for a struct's fields in order, and report a confusing error.
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if input.get(start) != Some(&b'{') {
        let line = input[..start].iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = input[..start]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        return Err(InputError::Json {
            line,
            column: start - line_start + 1,
            message: "not a Prometheus API response: expected a JSON object".to_owned(),
        });
    }
    let response: Response<'_> = serde_json::from_slice(input).map_err(|e| json_error(&e))?;
    match &*response.status {
        "success" => {}
        "error" => {
            return Err(InputError::Prometheus {
                error_type: response.error_type.unwrap_or_else(|| "unknown".to_owned()),
                message: response.error.unwrap_or_default(),
            });
        }
        other => return Err(InputError::Status(other.to_owned())),
    }
    let raw: Vec<RawSeries<'_>> = match response.data {
        None => return Err(InputError::NoData),
        Some(Data::Scalar(_)) => return Err(InputError::ResultType("scalar".into())),
        Some(Data::String(_)) => return Err(InputError::ResultType("string".into())),
        Some(Data::Matrix(result)) => result
            .into_iter()
            .map(|r| RawSeries {
                metric: r.metric,
                points: r.values,
                histograms: r.histograms.is_some(),
                instant: false,
            })
            .collect(),
        Some(Data::Vector(result)) => result
            .into_iter()
            .map(|r| RawSeries {
                metric: r.metric,
                points: r.value.into_iter().collect(),
                histograms: r.histogram.is_some(),
                instant: true,
            })
            .collect(),
    };

    let mut out: Vec<Series> = Vec::with_capacity(raw.len());
    let mut seen: HashMap<Labels, usize> = HashMap::with_capacity(raw.len());
    for (index, r) in raw.into_iter().enumerate() {
        let labels =
            Labels::new(r.metric).map_err(|error| InputError::MetricLabels { index, error })?;
        if r.histograms {
            return Err(InputError::Histograms {
                index,
                series: labels.to_string(),
            });
        }
        if let Some(&first) = seen.get(&labels) {
            return Err(InputError::DuplicateSeries {
                index,
                first,
                series: labels.to_string(),
            });
        }
        seen.insert(labels.clone(), index);
        let at = |i: usize| {
            if r.instant {
                format!("data.result[{index}].value")
            } else {
                format!("data.result[{index}].values[{i}]")
            }
        };
        let mut samples = Vec::with_capacity(r.points.len());
        let mut prev: Option<(Timestamp, f64)> = None;
        for (i, Point(secs, text)) in r.points.iter().enumerate() {
            let ms = (secs * 1000.0).round();
            if !(MIN_MILLIS as f64..=MAX_MILLIS as f64).contains(&ms) {
                return Err(InputError::JsonTime {
                    at: at(i),
                    series: labels.to_string(),
                    time: *secs,
                });
            }
            let t = Timestamp::from_millis(ms as i64);
            if let Some((prev_t, prev_secs)) = prev
                && t <= prev_t
            {
                return Err(InputError::JsonOutOfOrder {
                    at: at(i),
                    series: labels.to_string(),
                    time: *secs,
                    prev: i - 1,
                    prev_time: prev_secs,
                });
            }
            let Some(v) = parse_value(text.as_bytes()) else {
                return Err(InputError::JsonValue {
                    at: at(i),
                    series: labels.to_string(),
                    text: text.clone().into_owned(),
                });
            };
            samples.push(Sample::new(t, v));
            prev = Some((t, *secs));
        }
        out.push(Series { labels, samples });
    }
    Ok(out)
}

/// serde_json's error with its position split out, so it reads like the CSV errors.
fn json_error(e: &serde_json::Error) -> InputError {
    use serde_json::error::Category;
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let what = match e.classify() {
        Category::Syntax | Category::Eof => "invalid JSON",
        Category::Data => "not a Prometheus API response",
        Category::Io => "read failed",
    };
    InputError::Json {
        line,
        column,
        message: format!("{what}: {message}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(s: &str) -> Vec<Series> {
        read_prom_json(s.as_bytes()).unwrap()
    }

    fn err(s: &str) -> String {
        read_prom_json(s.as_bytes()).unwrap_err().to_string()
    }

    fn matrix(values: &str) -> String {
        format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[
                {{"metric":{{"__name__":"up","job":"api"}},"values":{values}}}]}}}}"#
        )
    }

    #[test]
    fn query_range_matrix() {
        let s = read(
            r#"{"status":"success","data":{"resultType":"matrix","result":[
              {"metric":{"__name__":"up","job":"api","instance":"a:9090"},
               "values":[[1435781430.781,"1"],[1435781445.781,"NaN"],[1435781460.781,"+Inf"],
                         [1435781475.781,"-Inf"],[1435781490,"0.25"]]},
              {"metric":{"job":"node"},"values":[[1435781430,"2"]]}
            ]},"warnings":["ignored"]}"#,
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].labels,
            Labels::new([("__name__", "up"), ("job", "api"), ("instance", "a:9090")]).unwrap()
        );
        let t: Vec<i64> = s[0].samples.iter().map(|x| x.t.millis()).collect();
        assert_eq!(
            t,
            [
                1_435_781_430_781,
                1_435_781_445_781,
                1_435_781_460_781,
                1_435_781_475_781,
                1_435_781_490_000
            ]
        );
        let v: Vec<f64> = s[0].samples.iter().map(|x| x.v).collect();
        assert!(v[1].is_nan());
        assert_eq!(
            [v[0], v[2], v[3], v[4]],
            [1.0, f64::INFINITY, f64::NEG_INFINITY, 0.25]
        );
        assert_eq!(s[1].labels, Labels::new([("job", "node")]).unwrap());
        assert_eq!(
            s[1].samples,
            [Sample::new(Timestamp::from_secs(1_435_781_430), 2.0)]
        );
    }

    #[test]
    fn instant_vector() {
        let s = read(
            r#"{"status":"success","data":{"resultType":"vector","result":[
              {"metric":{"__name__":"up"},"value":[1435781451.781,"1"]},
              {"metric":{"__name__":"down"},"value":[1435781451.781,"0"]}]}}"#,
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].labels.metric_name(), Some("down"));
        assert_eq!(
            s[1].samples,
            [Sample::new(Timestamp::from_millis(1_435_781_451_781), 0.0)]
        );
        assert!(
            read(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#).is_empty()
        );
    }

    #[test]
    fn prometheus_error() {
        assert_eq!(
            err(
                r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#
            ),
            "prometheus returned an error: bad_data: invalid parameter \"query\": 1:5: parse error"
        );
        assert_eq!(
            err(r#"{"status":"maybe"}"#),
            "status \"maybe\": expected \"success\" or \"error\""
        );
        assert_eq!(
            err(r#"{"status":"success"}"#),
            "status is \"success\" but there is no data"
        );
        assert_eq!(
            err(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#),
            "data.resultType \"scalar\" has no series (expected \"matrix\" or \"vector\")"
        );
    }

    #[test]
    fn malformed_value() {
        assert_eq!(
            err(&matrix(r#"[[1,"1"],[2,"1,5"]]"#)),
            "data.result[0].values[1] (up{job=\"api\"}): value \"1,5\": not a number (expected a \
             number, NaN, Inf, +Inf or -Inf)"
        );
        assert_eq!(
            err(
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#
            ),
            "data.result[0].value ({}): value \"x\": not a number (expected a number, NaN, Inf, \
             +Inf or -Inf)"
        );
    }

    #[test]
    fn out_of_order_names_series_and_index() {
        assert_eq!(
            err(&matrix(r#"[[1,"1"],[2,"1"],[2,"1"]]"#)),
            "data.result[0].values[2] (up{job=\"api\"}): time 2 is not after values[1]'s 2: \
             samples must be in time order"
        );
        assert_eq!(
            err(&matrix(r#"[[1.5,"1"],[1.25,"1"]]"#)),
            "data.result[0].values[1] (up{job=\"api\"}): time 1.25 is not after values[0]'s 1.5: \
             samples must be in time order"
        );
        assert_eq!(
            err(&matrix(r#"[[1e300,"1"]]"#)),
            "data.result[0].values[0] (up{job=\"api\"}): time 1e300 is out of range (expected \
             unix seconds)"
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            err("\n  [1, 2]"),
            "line 2, column 3: not a Prometheus API response: expected a JSON object"
        );
        assert_eq!(
            err("{}"),
            "line 1, column 2: not a Prometheus API response: missing field `status`"
        );
        assert_eq!(
            err("{\"status\":\"success\",\n \"data\": {\"resultType\": \"matrix\", \"result\": [}"),
            "line 2, column 46: invalid JSON: expected value"
        );
        assert_eq!(
            err("{\"status\":"),
            "line 1, column 10: invalid JSON: EOF while parsing a value"
        );
        assert_eq!(
            err(r#"{"data":{}}"#),
            "line 1, column 10: not a Prometheus API response: missing field `resultType`"
        );
        assert_eq!(
            err(&matrix(r#"[[1,1]]"#)),
            "line 2, column 70: not a Prometheus API response: invalid type: integer `1`, \
             expected a string"
        );
        assert_eq!(
            err(
                r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{"a":"1"},"values":[]},{"metric":{"a":"1"},"values":[]}]}}"#
            ),
            "data.result[1] ({a=\"1\"}) is the same series as data.result[0]"
        );
        assert_eq!(
            err(
                r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{"a-b":"1"},"values":[]}]}}"#
            ),
            "data.result[0].metric: label name \"a-b\": must match [a-zA-Z_][a-zA-Z0-9_]*"
        );
        assert_eq!(
            err(
                r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{"a":"1"},"histograms":[[1,{"count":"1"}]]}]}}"#
            ),
            "data.result[0] ({a=\"1\"}) has native histogram samples, which portent cannot read \
             (expected float samples)"
        );
    }
}
