/**
 * Lists over every page (AIP-158): the request is sent again with each `next_page_token` until
 * one comes back empty. Pages are fetched one at a time, as the caller iterates, so breaking out
 * of the loop fetches no more.
 */

/** A List request as the caller writes it: filter and page size; the token is the iterator's. */
export type ListRequest<R> = Partial<Omit<R, "pageToken" | "$typeName" | "$unknown">> & {
  /** Start from this page instead of the first. */
  readonly pageToken?: string;
};

/** Every item of every page, from the page of `request.pageToken` (or the first) on. */
export async function* listAll<Req extends object, Page extends { nextPageToken: string }, Item>(
  fetchPage: (request: Req) => Promise<Page>,
  request: Req & { readonly pageToken?: string },
  itemsOf: (page: Page) => readonly Item[],
): AsyncGenerator<Item, void, undefined> {
  for await (const page of pages(fetchPage, request)) {
    yield* itemsOf(page);
  }
}

/** Every page, from the page of `request.pageToken` (or the first) on. */
export async function* pages<Req extends object, Page extends { nextPageToken: string }>(
  fetchPage: (request: Req) => Promise<Page>,
  request: Req & { readonly pageToken?: string },
): AsyncGenerator<Page, void, undefined> {
  let pageToken = request.pageToken ?? "";
  do {
    const page = await fetchPage({ ...request, pageToken });
    yield page;
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
}
