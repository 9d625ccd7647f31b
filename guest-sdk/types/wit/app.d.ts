// world fazt:host/app@0.1.0
export type * as FaztHostDocuments010 from './interfaces/fazt-host-documents.js'; // import fazt:host/documents@0.1.0
export type * as FaztHostHttp010 from './interfaces/fazt-host-http.js'; // import fazt:host/http@0.1.0
export type * as FaztHostLog010 from './interfaces/fazt-host-log.js'; // import fazt:host/log@0.1.0
export type * as FaztHostStorage010 from './interfaces/fazt-host-storage.js'; // import fazt:host/storage@0.1.0
export * as handler from './interfaces/fazt-host-handler.js'; // export fazt:host/handler@0.1.0
