// `db`: JSON documents in collections, with the supabase-js v2 query builder.
//
//   const { data, error, count } = await db.from('notes').select('id,title', { count: 'exact' })
//     .eq('owner', uid).order('createdAt', { ascending: false }).limit(20);
//
// The builder only describes the operation; awaiting it sends that description
// to the host as one JSON string (fazt:host/documents.query) and parses the
// one-string reply. As in supabase-js, errors come back in `error` unless
// `throwOnError()` is chained, and writes return `data: null` unless
// `.select()` is chained.
import { query } from 'fazt:host/documents@0.1.0';

export class DocumentsError extends Error {
  constructor(error) {
    super(error.message);
    this.name = 'DocumentsError';
    this.code = error.code;
    this.details = error.details;
    this.hint = error.hint;
  }
}

const OPERATORS = new Set([
  'eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'in', 'like', 'ilike', 'is', 'isdistinct', 'contains', 'containedBy', 'overlaps',
]);  // isdistinct is spelled out of the others before it reaches the host
// PostgREST's short names, as they appear in or()/filter() strings.
const ALIASES = { cs: 'contains', cd: 'containedBy', ov: 'overlaps' };
// Operators whose value is a list, written (a,b) or {a,b} in strings; the JSON ones also take JSON.
const LIST_OPERATORS = new Set(['in', 'contains', 'containedBy', 'overlaps']);
const JSON_OPERATORS = new Set(['contains', 'containedBy', 'overlaps']);

const LIKE_OPERATORS = new Set(['like', 'ilike']);
// PostgREST's quantified operators in strings, as postgrest-js sends likeAnyOf: `like(any).{a%,b%}`.
const QUANTIFIED = /^(eq|gt|gte|lt|lte|like|ilike)\((any|all)\)$/;
const isOperator = (op) => op in ALIASES || OPERATORS.has(op) || QUANTIFIED.test(op);
// JSON's number grammar: `007` or `1.` is text, not a number.
const JSON_NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

function likePattern(op, value) {
  // PostgREST takes `*` for `%` in like patterns; so do we, but an escaped `\*` stays a literal `*`.
  return LIKE_OPERATORS.has(op) && typeof value === 'string'
    ? value.replace(/\\[^]|\*/g, (m) => (m === '*' ? '%' : m))
    : value;
}

// A filter value as JSON carries it. JSON has no Infinity or NaN (JSON.stringify would send null):
// name the number instead. A BigInt goes as the number it is (postgrest-js sends `eq.1` for 1n;
// JSON.stringify would throw on it).
function finite(value, shown = String(value)) {
  if (typeof value === 'bigint') {
    if (!Number.isSafeInteger(Number(value))) {
      throw new DocumentsError({ message: `${shown.slice(0, 40)} is past the integers a filter can send exactly (2^53)`, code: '22003' });
    }
    return Number(value);
  }
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new DocumentsError({ message: `${shown.slice(0, 40)} is out of range for a number`, code: '22003' });
  }
  return value;
}

// A filter value with its numbers (and BigInts) as JSON carries them, inside arrays and objects too
// (contains, containedBy).
function plain(value) {
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return finite(value);
}

function isQuoted(text) {
  return text.length >= 2 && text.startsWith('"') && text.endsWith('"');
}

function unquote(text) {
  return text.slice(1, -1).replace(/\\(.)/g, '$1');
}

// A value written in PostgREST's text syntax: "quoted" stays a string,
// JSON numbers/true/false/null become JSON values.
function parseText(text) {
  if (isQuoted(text)) return unquote(text);
  if (text === 'null') return null;
  if (text === 'true') return true;
  if (text === 'false') return false;
  if (JSON_NUMBER.test(text)) return finite(Number(text), text);
  return text;
}

function splitTop(text, sep = ',', { refuseEmpty = false } = {}) {
  const parts = [];
  let depth = 0, quoted = false, start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && quoted) { i++; continue; }
    if (c === '"') quoted = !quoted;
    else if (!quoted && (c === '(' || c === '{' || c === '[')) depth++;
    else if (!quoted && (c === ')' || c === '}' || c === ']')) { if (--depth < 0) break; }
    else if (!quoted && depth === 0 && c === sep) { parts.push(text.slice(start, i)); start = i + 1; }
  }
  // PostgREST refuses what it cannot read; read anyhow, it would silently match nothing.
  if (depth !== 0 || quoted) {
    throw new DocumentsError({ message: `unbalanced parentheses or quotes in ${text.slice(0, 60)}`, code: 'PGRST100' });
  }
  parts.push(text.slice(start));
  const trimmed = parts.map((p) => p.trim());
  // PostgREST refuses an empty filter (`a.eq.1,`); an empty list is `()`.
  if (refuseEmpty && trimmed.includes('')) {
    throw new DocumentsError({ message: `an empty filter in ${text.slice(0, 60)}`, code: 'PGRST100' });
  }
  return trimmed.filter((p) => p !== '');
}

function parseList(op, text) {
  if (typeof text !== 'string') return text;
  const t = text.trim();
  if (JSON_OPERATORS.has(op) && (t.startsWith('[') || t.startsWith('{"'))) {
    try { return JSON.parse(t); } catch { /* fall through to the {a,b} form */ }
  }
  if ((t.startsWith('(') && t.endsWith(')')) || (t.startsWith('{') && t.endsWith('}'))) {
    return splitTop(t.slice(1, -1)).map(parseText);
  }
  throw new DocumentsError({ message: `${op} takes a list like (a,b), not ${t.slice(0, 40)}`, code: 'PGRST100' });
}

// One filter term from an operator and a value given in JS.
function term(field, op, value) {
  op = ALIASES[op] ?? op;
  if (op === 'isdistinct') return distinctFrom(field, value);
  if (!OPERATORS.has(op)) {
    throw new DocumentsError({ message: `unknown operator ${String(op).slice(0, 40)}`, code: 'PGRST100' });
  }
  value = plain(value);
  return [op, field, likePattern(op, value)];
}

// SQL's IS DISTINCT FROM (PostgREST's isdistinct): a missing or null field is a value like any other.
function distinctFrom(field, value) {
  if (value === null) return ['not', ['is', field, null]];
  return ['or', [['is', field, null], ['not', term(field, 'eq', value)]]];
}

// PostgREST's `is` values, in any case: `unknown` is SQL's NULL boolean.
const IS_VALUES = { null: null, unknown: null, true: true, false: false };

// One filter term whose value, if a string, is in PostgREST's text syntax, as postgrest-js
// sends it for or(), filter() and not(): `.filter('n', 'gt', '4')` is `.gt('n', 4)`.
function textTerm(field, op, value) {
  op = ALIASES[op] ?? op;
  const quantified = QUANTIFIED.exec(op);
  if (quantified) {
    const t = typeof value === 'string' ? value.trim() : null;
    const items = Array.isArray(value) ? value : /^(\(.*\)|\{.*\})$/s.test(t) ? splitTop(t.slice(1, -1)) : null;
    if (!items) throw new DocumentsError({ message: `${op} takes a list like {a,b}, not ${String(value).slice(0, 40)}`, code: 'PGRST100' });
    return patternList(field, quantified[1], items, quantified[2] === 'any' ? 'or' : 'and', textTerm);
  }
  if (typeof value !== 'string') return term(field, op, value);
  if (op === 'is' && Object.hasOwn(IS_VALUES, value.toLowerCase())) return term(field, op, IS_VALUES[value.toLowerCase()]);
  if (LIST_OPERATORS.has(op)) return term(field, op, parseList(op, value));
  // A pattern is text even when it reads as a number.
  if (LIKE_OPERATORS.has(op)) return term(field, op, isQuoted(value) ? unquote(value) : value);
  return term(field, op, parseText(value));
}

// Any (join 'or') or all ('and') of the values; `read` makes each term (textTerm: in string syntax).
function patternList(field, op, patterns, join, read = term) {
  if (!Array.isArray(patterns)) {
    throw new DocumentsError({ message: `${op}${join === 'or' ? 'AnyOf' : 'AllOf'} takes an array of patterns`, code: 'PGRST100' });
  }
  if (!patterns.length) return join === 'or' ? ['in', field, []] : ['not', ['in', field, []]];
  return [join, patterns.map((p) => read(field, op, p))];
}

// `a.eq.1,b.in.(2,3),and(c.gt.1,not.d.is.null)` -> filter terms.
function parseFilters(text) {
  return splitTop(text, ',', { refuseEmpty: true }).map(parseFilter);
}

function parseFilter(item) {
  let negate = false;
  if (item.startsWith('not.')) { negate = true; item = item.slice(4); }
  const group = /^(and|or)\((.*)\)$/s.exec(item);
  let t;
  if (group) {
    t = [group[1], parseFilters(group[2])];
  } else {
    const parts = item.split('.');
    let i = 1;
    while (i < parts.length && !isOperator(parts[i]) && parts[i] !== 'not') i++;
    const field = parts.slice(0, i).join('.');
    // A parenthesis in the field is a group missing its and/or, as in `(a.eq.1)`.
    if (i >= parts.length - 1 || /[()]/.test(field)) {
      throw new DocumentsError({ message: `cannot read the filter ${item.slice(0, 60)}: write field.op.value`, code: 'PGRST100' });
    }
    let op = parts[i];
    let rest = parts.slice(i + 1);
    if (op === 'not') { negate = !negate; op = rest[0]; rest = rest.slice(1); }
    t = textTerm(field, op, rest.join('.'));
  }
  return negate ? ['not', t] : t;
}

// The engine's own stack limit, met by a value or filter nested hundreds deep: SpiderMonkey's
// "too much recursion" (InternalError), or a RangeError elsewhere.
function tooDeep(e) {
  return e instanceof RangeError || (e instanceof Error && e.name === 'InternalError');
}
const TOO_DEEP = { message: 'a value or filter is nested too deeply to send', code: '54001', details: null, hint: null };

function run(operation) {
  let text;
  try {
    text = JSON.stringify(operation);
  } catch (e) {
    if (!tooDeep(e)) throw e;
    return { data: null, error: { ...TOO_DEEP }, count: null, status: 400, statusText: 'Bad Request' };
  }
  const reply = JSON.parse(query(text));
  if (reply.cursor === null) delete reply.cursor;
  return reply;
}

class QueryBuilder {
  constructor(collection) {
    this.op = { op: 'select', collection, where: [] };
    this.shouldThrow = false;
  }

  // ---- what to do ----
  select(columns = '*', options = {}) {
    if (this.op.op === 'select') {
      this.op.columns = columns;
      if (options.count) this.op.count = options.count;
      if (options.head) this.op.head = true;
    } else {
      this.op.returning = true; // insert/update/upsert/delete(...).select(): return the rows
      this.op.columns = columns;
    }
    return this;
  }
  insert(values, options = {}) { return this.write('insert', values, options); }
  update(values, options = {}) { return this.write('update', values, options); }
  upsert(values, options = {}) {
    this.write('upsert', values, options);
    if (options.onConflict) this.op.onConflict = options.onConflict;
    if (options.ignoreDuplicates) this.op.ignoreDuplicates = true;
    return this;
  }
  delete(options = {}) { return this.write('delete', undefined, options); }
  write(op, values, options) {
    this.op.op = op;
    if (values !== undefined) this.op.values = values;
    if (options.count) this.op.count = options.count;
    return this;
  }

  // ---- filters ----
  eq(f, v) { return this.add(() => term(f, 'eq', v)); }
  neq(f, v) { return this.add(() => term(f, 'neq', v)); }
  gt(f, v) { return this.add(() => term(f, 'gt', v)); }
  gte(f, v) { return this.add(() => term(f, 'gte', v)); }
  lt(f, v) { return this.add(() => term(f, 'lt', v)); }
  lte(f, v) { return this.add(() => term(f, 'lte', v)); }
  in(f, v) { return this.add(() => textTerm(f, 'in', v)); }
  like(f, v) { return this.add(() => term(f, 'like', v)); }
  ilike(f, v) { return this.add(() => term(f, 'ilike', v)); }
  is(f, v) { return this.add(() => textTerm(f, 'is', v)); }
  isDistinct(f, v) { return this.add(() => term(f, 'isdistinct', v)); }
  contains(f, v) { return this.add(() => textTerm(f, 'contains', v)); }
  containedBy(f, v) { return this.add(() => textTerm(f, 'containedBy', v)); }
  overlaps(f, v) { return this.add(() => textTerm(f, 'overlaps', v)); }
  // postgrest-js's pattern lists (PostgreSQL's LIKE ANY/ALL): no pattern matches no row, or every row.
  likeAnyOf(f, patterns) { return this.add(() => patternList(f, 'like', patterns, 'or')); }
  likeAllOf(f, patterns) { return this.add(() => patternList(f, 'like', patterns, 'and')); }
  ilikeAnyOf(f, patterns) { return this.add(() => patternList(f, 'ilike', patterns, 'or')); }
  ilikeAllOf(f, patterns) { return this.add(() => patternList(f, 'ilike', patterns, 'and')); }
  match(obj) { for (const [f, v] of Object.entries(obj)) this.eq(f, v); return this; }
  not(f, op, v) { return this.add(() => ['not', textTerm(f, op, v)]); }
  filter(f, op, v) {
    if (typeof op === 'string' && op.startsWith('not.')) return this.not(f, op.slice(4), v);
    return this.add(() => textTerm(f, op, v));
  }
  or(filters, options = {}) {
    this.topLevel(options);
    return this.add(() => ['or', parseFilters(filters)]);
  }
  // supabase-js's foreignTable/referencedTable options aim at an embedded table: collections embed none,
  // so such a call is an error (applied to the top level it would change another query).
  topLevel({ foreignTable, referencedTable } = {}) {
    const table = referencedTable ?? foreignTable;
    if (table !== undefined) {
      this.invalid ??= { message: `no embedded collection ${String(table).slice(0, 40)}: documents embed none`, code: 'PGRST108', details: null, hint: null };
    }
  }
  // A filter that cannot be read becomes the reply's error when awaited, as
  // PostgREST would answer it, rather than a throw from the builder call.
  add(makeTerm) {
    try {
      this.op.where.push(makeTerm());
    } catch (e) {
      if (tooDeep(e)) e = new DocumentsError(TOO_DEEP);
      if (!(e instanceof DocumentsError)) throw e;
      this.invalid ??= { message: e.message, code: e.code, details: null, hint: null };
    }
    return this;
  }

  // ---- shaping the result ----
  // 'a,b' is two keys, as PostgREST reads postgrest-js's order=a,b.asc: the options go to the last.
  // `order('a,b.desc.nullslast')` as PostgREST reads its order parameter: a key's own modifiers win
  // over the options, which are the last key's when it has none.
  order(field, { ascending = true, nullsFirst, ...rest } = {}) {
    this.topLevel(rest);
    const keys = typeof field === 'string' ? field.split(',').map((f) => f.trim()) : [field];
    const order = (this.op.order ??= []);
    keys.forEach((key, i) => {
      const last = i === keys.length - 1;
      const m = typeof key === 'string' ? /^(.*?)(?:\.(asc|desc))?(?:\.(nullsfirst|nullslast))?$/.exec(key) : null;
      const entry = { field: m ? m[1] : key, ascending: m?.[2] ? m[2] === 'asc' : !last || ascending };
      const nulls = m?.[3] ? m[3] === 'nullsfirst' : last ? nullsFirst : undefined;
      if (nulls !== undefined) entry.nullsFirst = nulls;
      order.push(entry);
    });
    return this;
  }
  limit(n, options = {}) { this.topLevel(options); this.op.limit = this.rows('limit', n); return this; }
  // A number of rows: NaN or 2.5 (JSON sends NaN as null: no limit at all) is an error, as PostgREST answers it.
  rows(what, n) {
    if (!Number.isSafeInteger(n) || n < 0) {
      this.invalid ??= { message: `${what} must be a whole number of rows, 0 or more, not ${String(n).slice(0, 40)}`, code: 'PGRST100', details: null, hint: null };
    }
    return n;
  }
  range(from, to, options = {}) {
    this.topLevel(options);
    this.rows('range: from', from);
    this.rows('range: to', to + 1);
    // range(5, 4) asks for no rows (postgrest-js sends limit=0); one further back is no range.
    if (to < from - 1) {
      this.invalid ??= { message: `range: to (${to}) is before from (${from})`, code: 'PGRST103', details: null, hint: null };
    }
    this.op.offset = from;
    this.op.limit = to - from + 1;
    return this;
  }
  // Keyset pagination: the `cursor` of the previous page's reply, or its last row (with its id).
  after(cursor) { this.op.after = cursor; return this; }
  single() { this.op.single = 'one'; return this; }
  maybeSingle() { this.op.single = 'maybe'; return this; }
  throwOnError() { this.shouldThrow = true; return this; }
  // supabase-js's type casts (`.returns<T>()`): TypeScript's business, nothing at run time.
  returns() { return this; }
  overrideTypes() { return this; }

  // ---- running it ----
  toJSON() { return this.op; }
  execute() {
    const reply = this.invalid
      ? { data: null, error: this.invalid, count: null, status: 400, statusText: 'Bad Request' }
      : run(this.op);
    if (reply.error && this.shouldThrow) throw new DocumentsError(reply.error);
    return reply;
  }
  then(resolve, reject) {
    let reply;
    try { reply = this.execute(); } catch (e) { return Promise.reject(e).then(resolve, reject); }
    return Promise.resolve(reply).then(resolve, reject);
  }
}

export const db = {
  from(collection) { return new QueryBuilder(collection); },
  // Runs several builders in one transaction: all commit, or none does.
  // Replies `{ data: [reply, ...], error }`; an error names the operation that failed.
  batch(builders) {
    if (!Array.isArray(builders) || !builders.every((b) => b instanceof QueryBuilder)) {
      const error = { message: 'batch takes an array of db.from(...) operations', code: 'PGRST100', details: null, hint: null };
      return Promise.resolve({ data: null, error, count: null, status: 400, statusText: 'Bad Request' });
    }
    const invalid = builders.find((b) => b.invalid);
    if (invalid) return Promise.resolve(invalid.execute());
    return Promise.resolve(run({ op: 'batch', ops: builders.map((b) => b.toJSON()) }));
  },
};
