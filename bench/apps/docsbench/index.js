// The documents benchmark's queries behind HTTP (bench/docs): each answers one query of the
// host API benchmark, built with the SDK's query builder, as JSON.
import { db } from 'fazt';

const notes = () => db.from('notes');

const QUERIES = {
  eq: (p) => notes().select().eq('owner', p.get('owner')).limit(20),
  id: (p) => notes().select().eq('id', p.get('id')).maybeSingle(),
  range: (p) => notes().select().eq('owner', p.get('owner'))
    .gte('createdAt', p.get('from')).lt('createdAt', p.get('to'))
    .order('createdAt', { ascending: false }).limit(20),
  page: (p) => notes().select().eq('owner', p.get('owner'))
    .order('createdAt', { ascending: false }).limit(20).after(p.get('after')),
  count: (p) => notes().select('*', { count: 'exact', head: true }).eq('status', p.get('status')),
  scan: (p) => notes().select().eq('address.zip', p.get('zip')).limit(20),
};

export default {
  async fetch(request) {
    const url = new URL(request.url);
    const name = url.pathname.slice(1);
    if (!Object.hasOwn(QUERIES, name)) return Response.json({ error: 'not found' }, { status: 404 });
    const { data, count, error } = await QUERIES[name](url.searchParams);
    if (error) return Response.json({ error: error.message }, { status: error.status || 500 });
    return Response.json(name === 'count' ? { count } : data);
  },
};
