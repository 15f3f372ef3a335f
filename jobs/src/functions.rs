//! Spark's scalar functions (the `datafusion-spark` crate), registered beside DataFusion's
//! own under the name `spark_<name>`.
//!
//! Many have a DataFusion namesake that means something else (`substring` from a
//! position of 0 or below, `concat` with a NULL, `round` of a .5): under their own names
//! they would change what DataFusion SQL jobs compute. Prefixed, they serve the Spark
//! Connect endpoint (which calls them for Spark's names) and SQL jobs that ask for Spark's
//! meaning. Every session of a job has them: the client's, the scheduler's and the
//! executors' (a plan names its functions, and each side resolves the names itself).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// The prefix of Spark's functions' names.
pub const PREFIX: &str = "spark_";

/// Spark's scalar functions, each named `spark_<its Spark name>`, and Tarn's own where
/// `datafusion-spark` computes otherwise than Spark ([`ROUND_DOUBLE`]).
pub fn spark_functions() -> Vec<Arc<ScalarUDF>> {
    let mut fs: Vec<Arc<ScalarUDF>> =
        datafusion_spark::all_default_scalar_functions().into_iter().map(|f| renamed(f, Vec::new())).collect();
    fs.push(Arc::new(ScalarUDF::new_from_impl(RoundDouble::new())));
    fs
}

/// Spark's `round(x, d)` of a double (see [`round_double`]).
pub const ROUND_DOUBLE: &str = "spark_round_double";

/// Spark's `round` of a double: the double's shortest decimal text (what Java's
/// `Double.toString` gives), rounded half up (away from zero) at `d` places, `d` below
/// zero rounding to tens, hundreds, ..., and read back. So `round(2.675, 2)` is 2.68, as
/// in Spark, where rounding the binary value (2.67499999...) gives 2.67.
pub fn round_double(v: f64, d: i32) -> f64 {
    if !v.is_finite() {
        return v;
    }
    // Display never uses an exponent: "0.0000001", "12300000000000000000000".
    let text = format!("{}", v.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let mut point = int.len() as i64;
    let keep = point + d as i64;
    if keep < 0 {
        return 0.0;
    }
    let keep = keep as usize;
    if keep >= digits.len() {
        return v;
    }
    let up = digits[keep] >= 5;
    digits.truncate(keep);
    if up {
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, 1);
                point += 1;
                break;
            }
            i -= 1;
            if digits[i] == 9 {
                digits[i] = 0;
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let point = point as usize;
    let mut out = String::with_capacity(digits.len() + 2);
    for i in 0..point.max(1) {
        out.push(char::from(b'0' + digits.get(i).copied().unwrap_or(0)));
    }
    if digits.len() > point {
        out.push('.');
        out.extend(digits[point..].iter().map(|d| char::from(b'0' + d)));
    }
    let r: f64 = out.parse().unwrap_or(v.abs());
    if r == 0.0 {
        0.0
    } else {
        r.copysign(v)
    }
}

/// [`round_double`] over a column of doubles and a scale.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RoundDouble {
    signature: Signature,
}

impl RoundDouble {
    fn new() -> Self {
        RoundDouble { signature: Signature::exact(vec![DataType::Float64, DataType::Int32], Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for RoundDouble {
    fn name(&self) -> &str {
        ROUND_DOUBLE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::{Array, Float64Array};
        use datafusion::common::cast::{as_float64_array, as_int32_array};
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [xs, ds] = arrays.as_slice() else {
            return datafusion::common::exec_err!("{ROUND_DOUBLE} takes a double and a scale");
        };
        let (xs, ds) = (as_float64_array(xs)?, as_int32_array(ds)?);
        let out: Float64Array = (0..xs.len())
            .map(|i| (xs.is_valid(i) && ds.is_valid(i)).then(|| round_double(xs.value(i), ds.value(i))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Registers [`spark_functions`] in `state`.
pub fn register(state: &mut datafusion::execution::session_state::SessionState) -> Result<()> {
    use datafusion::execution::FunctionRegistry;
    for f in spark_functions() {
        state.register_udf(f)?;
    }
    Ok(())
}

/// Spark's function `name` (its name in `datafusion-spark`) as `spark_<name>`, also known
/// by `aliases` in a session it is registered in: a session whose SQL means Spark's
/// `substring` registers it with the alias `substring` (plans still name it
/// `spark_substring`, which every session knows).
pub fn spark_function(name: &str, aliases: &[&str]) -> Option<Arc<ScalarUDF>> {
    let f = datafusion_spark::all_default_scalar_functions().into_iter().find(|f| f.name() == name)?;
    Some(renamed(f, aliases.iter().map(|a| a.to_string()).collect()))
}

fn renamed(inner: Arc<ScalarUDF>, aliases: Vec<String>) -> Arc<ScalarUDF> {
    let name = format!("{PREFIX}{}", inner.name().trim_start_matches(PREFIX));
    Arc::new(ScalarUDF::new_from_impl(Renamed { inner, name, aliases }))
}

/// A function under another name; everything else is the inner function's.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Renamed {
    inner: Arc<ScalarUDF>,
    name: String,
    aliases: Vec<String>,
}

impl ScalarUDFImpl for Renamed {
    fn name(&self) -> &str {
        &self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let inner = Arc::new(self.inner.inner().with_updated_config(config)?);
        Some(ScalarUDF::new_from_impl(Renamed { inner, name: self.name.clone(), aliases: self.aliases.clone() }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_round_half_up_on_their_decimal_text() {
        for (v, d, want) in [
            (2.675, 2, 2.68),
            (2.665, 2, 2.67),
            (-2.675, 2, -2.68),
            (1.005, 2, 1.01),
            (0.5, 0, 1.0),
            (-0.5, 0, -1.0),
            (123.456, 0, 123.0),
            (9.995, 2, 10.0),
            (1234.5, -2, 1200.0),
            (1250.0, -2, 1300.0),
            (999.0, -3, 1000.0),
            (4.0, -1, 0.0),
            (1e-7, 2, 0.0),
            (-0.001, 2, 0.0),
            (12.0, 5, 12.0),
            (1e22, 2, 1e22),
        ] {
            let got = round_double(v, d);
            assert!(
                got == want && got.is_sign_negative() == want.is_sign_negative(),
                "round({v}, {d}) = {got}, not {want}"
            );
        }
        assert!(round_double(f64::NAN, 1).is_nan());
        assert_eq!(round_double(f64::INFINITY, 1), f64::INFINITY);
    }

    #[test]
    fn every_spark_function_has_the_prefix_and_no_namesake_is_replaced() {
        let fs = spark_functions();
        assert!(fs.len() > 50, "{} functions", fs.len());
        let names: Vec<&str> = fs.iter().map(|f| f.name()).collect();
        assert!(names.iter().all(|n| n.starts_with(PREFIX)), "{names:?}");
        assert!(names.contains(&ROUND_DOUBLE), "{names:?}");
        assert!(names.contains(&"spark_substring") && names.contains(&"spark_concat"), "{names:?}");
        assert!(fs.iter().all(|f| f.aliases().is_empty()), "an alias would shadow DataFusion's own");
        let sub = spark_function("substring", &["substr"]).unwrap();
        assert_eq!((sub.name(), sub.aliases()), ("spark_substring", &["substr".to_string()][..]));
        assert!(spark_function("no_such_function", &[]).is_none());
    }
}
