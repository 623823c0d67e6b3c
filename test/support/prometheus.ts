/** Prometheus' text format 0.0.4, read strictly: what the metrics tests scrape. */

// One line of the format: a comment (HELP/TYPE) or a sample with optional labels.
const LABEL = String.raw`[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"`;
const SAMPLE = new RegExp(String.raw`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{${LABEL}(,${LABEL})*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$`);
const COMMENT = /^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped))$/;

/** The samples of an exposition, keyed by `name{labels}`; throws on a line that is not the text format. */
export function parsePrometheusText(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || COMMENT.test(line)) continue;
    if (!SAMPLE.test(line)) throw new Error(`not Prometheus text format: ${line}`);
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
