package writer

// CastsToOutput exposes castsToOutput to the tests of package writer_test.
var CastsToOutput = castsToOutput
