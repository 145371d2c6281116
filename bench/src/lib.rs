//! vwire benchmarks: an AF_PACKET generator and sink, the side-by-side scenario runner, and
//! the report (Markdown and a PNG chart). See `bench/README.md`.

/// The PNG chart.
pub mod chart;
/// The test frame and its stamp.
pub mod frame;
/// The traffic generator.
pub mod gen;
/// The Markdown report.
pub mod report;
/// AF_PACKET mmap rings: the socket-level unsafe code.
pub mod ring;
/// Scenarios over each device under test.
pub mod runner;
/// The receiving side.
pub mod sink;
/// Namespaces, veths and the devices under test, all torn down on drop.
pub mod topo;
/// What a wakeup costs here (machine section of the report).
pub mod wake;
