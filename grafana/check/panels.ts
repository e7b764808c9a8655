// The panel types the dashboards may use, each with its plugin's own options and field-config
// types from @grafana/schema (Grafana 11.1, the version compose runs), so that a misspelt option,
// a wrong enum value or a panel type with no schema here fails `tsc --strict`.
//
// `Dashboard` alone types a panel's `options` and `targets` as plain records, and its field
// config with enums that a JSON string can never be; `CheckedDashboard` types them as below.

import type {
  Dashboard,
  DataQuery,
  DataSourceRef,
  FieldConfig,
  FieldConfigSource,
  Panel,
  RowPanel,
} from '@grafana/schema';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as StateTimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as Text from '@grafana/schema/dist/esm/raw/composable/text/panelcfg/x/TextPanelCfg_types.gen';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/** A schema type as JSON writes it: string enums as their values, every key optional (Grafana
 *  fills defaults), no key that the type lacks. */
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends readonly (infer U)[]
      ? Json<U>[]
      : T extends object
        ? { [K in keyof T]?: Json<T[K]> }
        : T;

/** The provisioned Prometheus data source (grafana/provisioning/datasources/prometheus.yml). */
export type Prometheus = DataSourceRef & { type: 'prometheus'; uid: 'prometheus' };

/** A Prometheus query: @grafana/schema 11.1 has no Prometheus type, so these are the Prometheus
 *  plugin's query fields (grafana/public/app/plugins/datasource/prometheus types). */
export type PrometheusTarget = Omit<DataQuery, 'datasource'> & {
  datasource: Prometheus;
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  intervalFactor?: number;
  exemplar?: boolean;
  editorMode?: 'code' | 'builder';
};

type Fields<Custom> = Json<
  Omit<FieldConfigSource, 'defaults'> & {
    defaults: Omit<FieldConfig, 'custom'> & { custom?: Custom };
  }
>;

type Common = Omit<Panel, 'type' | 'options' | 'fieldConfig' | 'targets' | 'datasource'>;

type QueryPanel<Kind extends string, Options, Custom> = Common & {
  type: Kind;
  datasource: Prometheus;
  targets: PrometheusTarget[];
  options?: Json<Options>;
  fieldConfig?: Fields<Custom>;
};

export type StatPanel = QueryPanel<'stat', Stat.Options, never>;
export type TimeSeriesPanel = QueryPanel<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>;
export type StateTimelinePanel = QueryPanel<
  'state-timeline',
  StateTimeline.Options,
  StateTimeline.FieldConfig
>;
export type TextPanel = Common & { type: 'text'; options: Json<Text.Options> };
export type Row = Omit<RowPanel, 'panels'> & { panels: DashboardPanel[] };

/** Every panel a duplex dashboard holds. */
export type DashboardPanel = StatPanel | TimeSeriesPanel | StateTimelinePanel | TextPanel | Row;

/** A dashboard file: @grafana/schema's `Dashboard`, its panels typed by `DashboardPanel`. */
export type CheckedDashboard = Omit<Dashboard, 'panels'> & { panels: DashboardPanel[] };
