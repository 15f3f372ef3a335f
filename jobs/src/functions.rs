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
};

/// The prefix of Spark's functions' names.
pub const PREFIX: &str = "spark_";

/// Spark's scalar functions, each named `spark_<its Spark name>`.
pub fn spark_functions() -> Vec<Arc<ScalarUDF>> {
    datafusion_spark::all_default_scalar_functions().into_iter().map(|f| renamed(f, Vec::new())).collect()
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
    fn every_spark_function_has_the_prefix_and_no_namesake_is_replaced() {
        let fs = spark_functions();
        assert!(fs.len() > 50, "{} functions", fs.len());
        let names: Vec<&str> = fs.iter().map(|f| f.name()).collect();
        assert!(names.iter().all(|n| n.starts_with(PREFIX)), "{names:?}");
        assert!(names.contains(&"spark_substring") && names.contains(&"spark_concat"), "{names:?}");
        assert!(fs.iter().all(|f| f.aliases().is_empty()), "an alias would shadow DataFusion's own");
        let sub = spark_function("substring", &["substr"]).unwrap();
        assert_eq!((sub.name(), sub.aliases()), ("spark_substring", &["substr".to_string()][..]));
        assert!(spark_function("no_such_function", &[]).is_none());
    }
}
