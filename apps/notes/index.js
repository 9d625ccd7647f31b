// A small notes API on the document store:
//   GET    /notes?owner=ann[&tag=x][&after=CURSOR]   newest first, 20 a page, with the next page's cursor
//   POST   /notes            {"owner", "title", "tags"?}
//   PATCH  /notes/ID         a JSON merge patch
//   DELETE /notes/ID
import { db } from 'fazt';

const PAGE = 20;

function problem(error, status = error.status || 400) {
  return Response.json({ error: error.message, code: error.code }, { status });
}

export default {
  async fetch(request) {
    const url = new URL(request.url);
    const [, collection, id] = url.pathname.split('/');
    if (collection !== 'notes') return Response.json({ error: 'not found' }, { status: 404 });

    if (request.method === 'GET' && !id) {
      const owner = url.searchParams.get('owner');
      if (!owner) return Response.json({ error: 'owner is required' }, { status: 400 });
      let q = db.from('notes').select('id,title,tags,createdAt').eq('owner', owner)
        .order('createdAt', { ascending: false }).limit(PAGE);
      const tag = url.searchParams.get('tag');
      if (tag) q = q.contains('tags', [tag]);
      const after = url.searchParams.get('after');
      if (after) q = q.after(after);
      const { data, error, cursor } = await q;
      return error ? problem(error) : Response.json({ notes: data, next: cursor ?? null });
    }

    if (request.method === 'POST' && !id) {
      let note;
      try {
        note = await request.json();
      } catch {
        return Response.json({ error: 'the body must be JSON' }, { status: 400 });
      }
      if (typeof note?.owner !== 'string' || typeof note?.title !== 'string') {
        return Response.json({ error: 'owner and title are required strings' }, { status: 400 });
      }
      const { data, error } = await db.from('notes')
        .insert({ owner: note.owner, title: note.title, tags: Array.isArray(note.tags) ? note.tags : [] })
        .select().single();
      return error ? problem(error) : Response.json(data, { status: 201 });
    }

    if (request.method === 'PATCH' && id) {
      const patch = await request.json().catch(() => null);
      if (!patch || typeof patch !== 'object') return Response.json({ error: 'the body must be a JSON object' }, { status: 400 });
      const { data, error } = await db.from('notes').update(patch).eq('id', id).select().maybeSingle();
      if (error) return problem(error);
      return data ? Response.json(data) : Response.json({ error: 'no such note' }, { status: 404 });
    }

    if (request.method === 'DELETE' && id) {
      const { count, error } = await db.from('notes').delete({ count: 'exact' }).eq('id', id);
      if (error) return problem(error);
      return count ? new Response(null, { status: 204 }) : Response.json({ error: 'no such note' }, { status: 404 });
    }

    return Response.json({ error: 'method not allowed' }, { status: 405 });
  },
};
